"""Multi-level ROIAlign, the three cascade box stages and the mask head (docs/method.md §3.1).

Each box is pooled from one of p2 … p5, chosen as detectron2 chooses it:
``floor(4 + log2(√area / 224 + 1e-8))`` clamped to 2 … 5, with ROIAlign at ``aligned=True``
(pixel centres at +0.5) and an adaptive number of samples per bin. Every stage refines the
previous stage's boxes (clipped to the image); the class score is the mean of the three stages'
softmax, the boxes are the last stage's. ROIAlign, boxes and scores are float32 whatever the
network's precision. A box that turns NaN between stages (detectron2 would stop on an
assertion) continues as an empty box, pools nothing and is dropped as empty at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ovdiff_cli.models.rcnn.boxes import area, clip, decode

BOX_LEVELS = ("p2", "p3", "p4", "p5")
LEVEL_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
MIN_LEVEL, MAX_LEVEL = 2, 5
CANONICAL_SIZE, CANONICAL_LEVEL = 224, 4
#: Box-delta weights (x, y, w, h) of the three cascade stages.
STAGE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


@dataclass(frozen=True)
class DetectionSettings:
    """Which detections an image keeps: score above ``score_threshold`` (before NMS), NMS at
    ``nms``, the ``max_detections`` best."""

    score_threshold: float = 0.35
    nms: float = 0.5
    max_detections: int = 100


def box_levels(boxes: torch.Tensor) -> torch.Tensor:
    """[R, 4] → int64 [R]: index into p2 … p5 of the level each box is pooled from.

    A 224 × 224 box maps to p4 (index 2), 112 × 112 to p3, anything under 112 to p3 or p2.
    """
    sizes = torch.sqrt(area(boxes))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_SIZE + 1e-8))
    return torch.clamp(levels, min=MIN_LEVEL, max=MAX_LEVEL).to(torch.int64) - MIN_LEVEL


def pool(features: list[torch.Tensor], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
    """Float32 features [B, C, H_l, W_l] of p2 … p5 and per-image boxes [R_b, 4] → [ΣR_b, C, size, size].

    Boxes are grouped by level, each group pooled from its level, and the results put back in
    the boxes' order.
    """
    # Imported here: torchvision.ops pulls in torch._dynamo (~5 s), which only the detector needs.
    from torchvision.ops import roi_align

    rois = torch.cat([F.pad(b, (1, 0), value=float(i)) for i, b in enumerate(boxes)])  # (image, x0, y0, x1, y1)
    levels = box_levels(rois[:, 1:])
    order = torch.argsort(levels, stable=True)
    per_level = torch.bincount(levels, minlength=len(features)).tolist()
    pooled = [roi_align(x, group, (size, size), spatial_scale=scale, sampling_ratio=0, aligned=True)
              for x, scale, group in zip(features, LEVEL_SCALES, rois[order].split(per_level))]
    out = torch.empty(len(rois), features[0].shape[1], size, size, dtype=features[0].dtype, device=rois.device)
    out[order] = torch.cat(pooled)
    return out


class BoxHead(nn.Module):
    """[R, 256, 7, 7] → [R, 1024]: two fully connected layers with ReLU."""

    def __init__(self, cin: int = 256 * 7 * 7, width: int = 1024) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, start_dim=1)))))


class BoxPredictor(nn.Module):
    """[R, 1024] → logits [R, 2] (object, background) and class-agnostic box deltas [R, 4]."""

    def __init__(self, width: int = 1024) -> None:
        super().__init__()
        self.cls_score = nn.Linear(width, 2)
        self.bbox_pred = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """[R, 256, 14, 14] → mask logits [R, 28, 28]: four 3 × 3 convs, a ×2 deconv (all with ReLU), a 1 × 1."""

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        for k in range(1, 5):
            self.add_module(f"mask_fcn{k}", nn.Conv2d(channels, channels, 3, padding=1))
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, 5):
            x = F.relu(getattr(self, f"mask_fcn{k}")(x))
        return self.predictor(F.relu(self.deconv(x)))[:, 0]


def average_scores(stage_probs: list[torch.Tensor]) -> torch.Tensor:
    """The stages' softmax outputs [R, 2] each → their mean [R, 2], summed in stage order then
    multiplied by 1/3 (detectron2's arithmetic, so the float32 result is the same)."""
    total = stage_probs[0]
    for p in stage_probs[1:]:
        total = total + p
    return total * (1.0 / len(stage_probs))


class CascadeROIHeads(nn.Module):
    """Proposals → final boxes [D, 4], scores [D] and mask probabilities [D, 28, 28] per image."""

    def __init__(self) -> None:
        super().__init__()
        self.box_head = nn.ModuleList(BoxHead() for _ in STAGE_WEIGHTS)
        self.box_predictor = nn.ModuleList(BoxPredictor() for _ in STAGE_WEIGHTS)
        self.mask_head = MaskHead()

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: list[tuple[int, int]],
                settings: DetectionSettings) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        # ROIAlign runs in float32, so box coordinates keep their precision under half precision
        levels = [features[f].float() for f in BOX_LEVELS]
        dtype = self.mask_head.predictor.weight.dtype
        counts = [len(p) for p in proposals]
        boxes, probs = proposals, []
        for stage, weights in enumerate(STAGE_WEIGHTS):
            if stage > 0:  # the next stage starts from this one's boxes, clipped (a NaN box becomes empty)
                boxes = [torch.nan_to_num(clip(b, size), nan=0.0) for b, size in zip(boxes, image_sizes)]
            pooled = pool(levels, boxes, 7).to(dtype)
            logits, deltas = self.box_predictor[stage](self.box_head[stage](pooled))
            probs.append(F.softmax(logits.float(), dim=-1))
            boxes = list(decode(deltas, torch.cat(boxes), weights).split(counts))
        scores = average_scores(probs).split(counts)
        kept = [keep_detections(b, s, size, settings) for b, s, size in zip(boxes, scores, image_sizes)]
        final = [b for b, _ in kept]
        if sum(len(b) for b in final) == 0:
            masks = torch.zeros(0, 28, 28, device=proposals[0].device)
        else:
            masks = torch.sigmoid(self.mask_head(pool(levels, final, 14).to(dtype)).float())
        return [(b, s, m) for (b, s), m in zip(kept, masks.split([len(b) for b in final]))]


def keep_detections(boxes: torch.Tensor, probs: torch.Tensor, size: tuple[int, int],
                    settings: DetectionSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [R, 4] and class probabilities [R, 2] of one image → kept boxes [D, 4], scores [D].

    Rows with a non-finite value dropped; boxes clipped; object score above the threshold; NMS
    (one class, so plain NMS); the best ``max_detections`` in score order.
    """
    from torchvision.ops import nms  # here, not at the top: see pool

    scores = probs[:, 0]
    wanted = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1) & (scores > settings.score_threshold)
    boxes, scores = clip(boxes[wanted], size), scores[wanted]
    keep = nms(boxes, scores, settings.nms)[: settings.max_detections]
    return boxes[keep], scores[keep]
