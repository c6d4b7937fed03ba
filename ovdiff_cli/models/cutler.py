"""CutLER's class-agnostic detector: its checkpoint and the optional detectron2 dependency.

The checkpoint is the ImageNet-trained Cascade Mask R-CNN (ResNet-50 FPN) of CutLER. detectron2
is not on the package index; it is imported only when this model is loaded, and its absence is
reported with the install command.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ovdiff_cli.models.interfaces import Proposals


CUTLER_URL = "http://dl.fbaipublicfiles.com/cutler/checkpoints/cutler_cascade_final.pth"
CUTLER_FILE = "cutler_cascade_final.pth"

DETECTRON2_INSTALL = ("pip install 'ovdiff-cli[cutler]' && pip install --no-build-isolation "
                      "'git+https://github.com/facebookresearch/detectron2.git'")


def detectron2_available() -> bool:
    """Whether detectron2 can be imported (checked without importing it)."""
    return importlib.util.find_spec("detectron2") is not None


@dataclass(frozen=True)
class CutlerWeights:
    """The located CutLER checkpoint."""

    checkpoint: Path
    device: torch.device


def load_cutler(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> CutlerWeights:
    """The checkpoint's location; the registry has checked that detectron2 imports. The mask stage
    builds the detector from it."""
    return CutlerWeights(files[CUTLER_FILE], device)


#: What a detector returns per image, at its input's resolution: boxes [R, 4] (x0, y0, x1, y1),
#: scores [R] in detector order, masks [R, M, M] foreground probabilities inside each box.
Detections = dict[str, torch.Tensor]
Detector = Callable[[list[dict[str, Any]]], list[Detections]]


def resize_for_detector(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """[3, H, W] in [0, 1] → [3, h, w] in [0, 255], short side ``min_size``, long side ≤ ``max_size``.

    detectron2's test-time ResizeShortestEdge sizes, bilinear (align_corners=False, no antialias:
    support images are upsampled, 512 → 800).
    """
    h, w = image.shape[-2:]
    scale = min_size / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    x = image.float()[None] * 255
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return x[0]


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Paste per-box mask probabilities [R, M, M] into an image of ``size`` → bool [R, H, W].

    A box (x0, y0, x1, y1) in output pixels spans the M × M map; each output pixel centre
    (x + 0.5, y + 0.5) samples it bilinearly (align_corners=False, zero outside), as detectron2
    pastes; kept where ≥ ``threshold``.
    """
    h, w = size
    r = masks.shape[0]
    if r == 0:
        return torch.zeros(0, h, w, dtype=torch.bool)
    x0, y0, x1, y1 = (boxes[:, k : k + 1].float() for k in range(4))
    xs = torch.arange(w, dtype=torch.float32)[None] + 0.5
    ys = torch.arange(h, dtype=torch.float32)[None] + 0.5
    gx = (xs - x0) / (x1 - x0) * 2 - 1                            # [R, W]
    gy = (ys - y0) / (y1 - y0) * 2 - 1                            # [R, H]
    grid = torch.stack([gx[:, None, :].expand(r, h, w), gy[:, :, None].expand(r, h, w)], dim=-1)
    pasted = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", align_corners=False)[:, 0]
    return pasted >= threshold


class CutlerProposer:
    """CutLER's detector as a :class:`~ovdiff_cli.models.interfaces.MaskProposer` (docs/method.md §3.1).

    Everything around the network is here, so it can be tested with a fake ``detector``: input
    scaling, the score filter and cap, boxes scaled back to the image, clipped, empty ones
    dropped, and masks pasted at the image's size with threshold 0.5.
    """

    name = "cutler"

    def __init__(self, detector: Detector, score_threshold: float = 0.35, max_detections: int = 100,
                 min_size: int = 800, max_size: int = 1333) -> None:
        self.detector = detector
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.min_size = min_size
        self.max_size = max_size

    @torch.no_grad()
    def propose(self, images: torch.Tensor) -> list[Proposals]:
        """images [B, 3, H, W] in [0, 1] → one Proposals per image (masks [J, H, W] bool, detector order)."""
        inputs = [{"image": resize_for_detector(im, self.min_size, self.max_size)} for im in images]
        out = []
        for im, inp, det in zip(images, inputs, self.detector(inputs)):
            out.append(self._postprocess(det, tuple(inp["image"].shape[-2:]), tuple(im.shape[-2:])))
        return out

    def _postprocess(self, det: Detections, input_size: tuple[int, int], size: tuple[int, int]) -> Proposals:
        scores, boxes, masks = det["scores"].float().cpu(), det["boxes"].float().cpu(), det["masks"].float().cpu()
        keep = scores > self.score_threshold
        scores, boxes, masks = scores[keep], boxes[keep], masks[keep]
        scores, boxes, masks = (t[: self.max_detections] for t in (scores, boxes, masks))
        sx, sy = size[1] / input_size[1], size[0] / input_size[0]
        boxes = boxes * torch.tensor([sx, sy, sx, sy])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0])
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores, boxes, masks = scores[nonempty], boxes[nonempty], masks[nonempty]
        return Proposals(paste_masks(masks, boxes, size), scores)


def cutler_config(device: torch.device | str, score_threshold: float = 0.35, max_detections: int = 100,
                  min_size: int = 800, max_size: int = 1333) -> Any:
    """detectron2's config for CutLER's Cascade Mask R-CNN (R50-FPN, one class-agnostic class).

    It restates CutLER's ImageNet cascade config for inference: RGB input with ImageNet
    statistics in 0–255, RPN NMS 0.65, box NMS 0.5, scores averaged over the three cascade
    stages (detectron2's cascade head does this), batch norm from the checkpoint's running
    statistics (trained with SyncBN; identical at inference).
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    m = cfg.MODEL
    m.META_ARCHITECTURE = "GeneralizedRCNN"
    m.DEVICE = str(device)
    m.MASK_ON = True
    m.PIXEL_MEAN = [123.675, 116.280, 103.530]
    m.PIXEL_STD = [58.395, 57.120, 57.375]
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = 50
    m.RESNETS.NORM = "BN"
    m.RESNETS.STRIDE_IN_1X1 = False
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.NORM = "BN"
    m.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.PRE_NMS_TOPK_TEST = 1000
    m.RPN.POST_NMS_TOPK_TEST = 1000
    m.RPN.NMS_THRESH = 0.65
    m.ROI_HEADS.NAME = "CascadeROIHeads"
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = 1
    m.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
    m.ROI_HEADS.NMS_THRESH_TEST = 0.5
    m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    m.ROI_BOX_HEAD.NUM_FC = 2
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    m.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    m.ROI_MASK_HEAD.NUM_CONV = 4
    m.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TEST = max_size
    cfg.TEST.DETECTIONS_PER_IMAGE = max_detections
    cfg.freeze()
    return cfg


def as_detector(model: torch.nn.Module, device: torch.device | str) -> Detector:
    """A built detectron2 GeneralizedRCNN as a :data:`Detector`."""

    @torch.no_grad()
    def detect(inputs: list[dict[str, Any]]) -> list[Detections]:
        # do_postprocess=False: boxes and 28 × 28 mask probabilities at the input's resolution;
        # CutlerProposer scales and pastes them, the same way detectron2 would.
        batch = [{"image": i["image"].to(device), "height": i["image"].shape[-2], "width": i["image"].shape[-1]}
                 for i in inputs]
        results = model.inference(batch, do_postprocess=False)
        return [{"boxes": r.pred_boxes.tensor, "scores": r.scores, "masks": r.pred_masks[:, 0]} for r in results]

    return detect


def detectron2_detector(weights: CutlerWeights, **settings: Any) -> Detector:
    """CutLER's detector with its checkpoint, built by detectron2 (imported here only)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cutler_config(weights.device, **settings)).eval()
    DetectionCheckpointer(model).load(str(weights.checkpoint))
    return as_detector(model, weights.device)
