"""The region proposal network and its selection of proposals (docs/method.md §3.1).

Anchors of sizes 32 … 512 on p2 … p6, ratios 0.5, 1, 2, unrounded. Selection works on the raw
objectness logits, not their sigmoid: in float32 the sigmoid of every logit above ≈ 17 is 1.0,
and ties would reorder the top-k and NMS. Per image: the 1000 best anchors of each level, their
boxes clipped, those with zero width or height dropped, NMS at 0.65 within each level, the best
1000 kept in score order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ovdiff_cli.models.rcnn.boxes import cell_anchors, clip, decode, grid_anchors, nonempty

LEVELS = ("p2", "p3", "p4", "p5", "p6")
STRIDES = (4, 8, 16, 32, 64)
ANCHOR_SIZES = (32, 64, 128, 256, 512)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ProposalSettings:
    """How many proposals survive, per level before NMS and per image after it."""

    pre_nms_topk: int = 1000
    post_nms_topk: int = 1000
    nms: float = 0.65


class RPNHead(nn.Module):
    """A shared 3 × 3 conv + ReLU, then per anchor an objectness logit and four box deltas."""

    def __init__(self, channels: int = 256, anchors: int = len(ANCHOR_RATIOS)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] → logits [B, H·W·A], deltas [B, H·W·A, 4] (location-major, anchor-minor)."""
        hidden = F.relu(self.conv(x))
        logits = self.objectness_logits(hidden)
        b, a, h, w = logits.shape
        deltas = self.anchor_deltas(hidden).unflatten(1, (a, 4))  # [B, A, 4, H, W]
        return logits.movedim(1, 3).reshape(b, h * w * a), deltas.movedim((3, 4), (1, 2)).reshape(b, h * w * a, 4)


class RPN(nn.Module):
    """Features {p2 … p6} → per image its proposals [P, 4] and their objectness logits [P]."""

    def __init__(self, settings: ProposalSettings = ProposalSettings()) -> None:
        super().__init__()
        self.rpn_head = RPNHead()
        self.settings = settings

    def forward(self, features: dict[str, torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        boxes, logits = [], []
        for level, stride, size in zip(LEVELS, STRIDES, ANCHOR_SIZES):
            x = features[level]
            lv_logits, lv_deltas = self.rpn_head(x)
            anchors = grid_anchors(cell_anchors(size, ANCHOR_RATIOS).to(x.device), x.shape[-2], x.shape[-1], stride)
            b, n = lv_logits.shape
            decoded = decode(lv_deltas.reshape(-1, 4), anchors[None].expand(b, -1, -1).reshape(-1, 4), RPN_WEIGHTS)
            boxes.append(decoded.view(b, n, 4))
            logits.append(lv_logits.float())
        return select_proposals(boxes, logits, image_sizes, self.settings)


def select_proposals(boxes: list[torch.Tensor], logits: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                     settings: ProposalSettings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-level boxes [B, N_l, 4] and logits [B, N_l] → per image (boxes [P, 4], logits [P]), best first.

    Top-k per level on the logits, clipping to the image (height, width), non-finite and
    zero-area boxes dropped, NMS within each level, at most ``post_nms_topk`` kept.
    """
    # Imported here: torchvision.ops pulls in torch._dynamo (~5 s), which only the detector needs.
    from torchvision.ops import batched_nms

    out = []
    for n, size in enumerate(image_sizes):
        picked_boxes, picked_logits, picked_levels = [], [], []
        for level, (lv_boxes, lv_logits) in enumerate(zip(boxes, logits)):
            best, idx = lv_logits[n].topk(min(settings.pre_nms_topk, lv_logits.shape[1]))
            picked_boxes.append(lv_boxes[n, idx])
            picked_logits.append(best)
            picked_levels.append(torch.full_like(idx, level))
        cand, score, level_of = torch.cat(picked_boxes), torch.cat(picked_logits), torch.cat(picked_levels)
        usable = torch.isfinite(cand).all(dim=1) & torch.isfinite(score)
        cand, score, level_of = clip(cand[usable], size), score[usable], level_of[usable]
        usable = nonempty(cand)
        cand, score, level_of = cand[usable], score[usable], level_of[usable]
        keep = batched_nms(cand, score, level_of, settings.nms)[: settings.post_nms_topk]
        out.append((cand[keep], score[keep]))
    return out
