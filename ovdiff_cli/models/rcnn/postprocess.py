"""Detections at the caller's image size, and detectron2's test-time resize (docs/method.md §3.1).

Boxes found at the network's input size are scaled to the output size, clipped, and dropped
when empty; each box's 28 × 28 mask probabilities are pasted into the image by bilinear
sampling at pixel centres over the box's real-valued extent (zeros outside the map), kept where
≥ 0.5. torchvision's models paste into integer boxes instead, which moves mask edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovdiff_cli.models.rcnn.boxes import clip, nonempty


@dataclass(frozen=True)
class Detections:
    """One image's detections at its output size: boxes [D, 4] (x0, y0, x1, y1) float32, scores
    [D] in detector order (best first), masks bool [D, H, W]."""

    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """The (height, width) of detectron2's ``ResizeShortestEdge``: short side ``short``, long side
    at most ``max_size``, each rounded half up. 240 × 320 → 800 × 1067 (1066.67 rounds up).

    The float steps are detectron2's (the long side scaled first, then both by the cap), so the
    rounding lands on the same integers: 91 × 182 → 666 × 1333, where scaling 91 by 1333/182 in
    one step would give 667.
    """
    tall = height >= width  # then the width is the short side (a square counts as tall)
    new_long = short / min(height, width) * max(height, width)
    new_short = float(short)
    if new_long > max_size:
        cap = max_size / new_long
        new_short, new_long = new_short * cap, new_long * cap
    s, l = int(new_short + 0.5), int(new_long + 0.5)
    return (l, s) if tall else (s, l)


def resize_uint8(image: np.ndarray, short: int = 800, max_size: int = 1333) -> torch.Tensor:
    """An RGB uint8 array [H, W, 3] → float32 [3, h, w] in 0–255, resized as detectron2's predictor
    resizes: PIL bilinear on the 8-bit image (so values are rounded to integers)."""
    h, w = shortest_edge_size(image.shape[0], image.shape[1], short, max_size)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR))
    return torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))


def _window(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Pixels [first, last) sampled for a box side [lo, hi]: one pixel of margin, inside [0, limit)."""
    return max(math.floor(lo) - 1, 0), min(math.ceil(hi) + 1, limit)


def _grid_axis(first: int, last: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` coordinates [last − first] of pixel centres first + 0.5 … over the box side [lo, hi]."""
    centres = torch.arange(first, last, dtype=torch.float32, device=lo.device) + 0.5
    return (centres - lo) / (hi - lo) * 2 - 1


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Mask probabilities [D, M, M] of boxes [D, 4] (x0, y0, x1, y1) → bool [D, H, W].

    Only pixels within a pixel of each box are sampled (beyond it a value is under 0.5 anyway).
    """
    h, w = size
    out = torch.zeros(len(probs), h, w, dtype=torch.bool, device=probs.device)
    boxes = boxes.float()
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):  # one transfer for every box's window
        (left, right), (top, bottom) = _window(x0, x1, w), _window(y0, y1, h)
        if right <= left or bottom <= top:
            continue
        gx = _grid_axis(left, right, boxes[k, 0], boxes[k, 2])
        gy = _grid_axis(top, bottom, boxes[k, 1], boxes[k, 3])
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)
        sampled = F.grid_sample(probs[k].float()[None, None], grid[None], mode="bilinear", align_corners=False)
        out[k, top:bottom, left:right] = sampled[0, 0] >= threshold
    return out


def to_output_size(boxes: torch.Tensor, scores: torch.Tensor, mask_probs: torch.Tensor,
                   input_size: tuple[int, int], size: tuple[int, int], threshold: float = 0.5) -> Detections:
    """Detections at the network's ``input_size`` (height, width) → :class:`Detections` at ``size``."""
    boxes = boxes.clone()
    boxes[:, 0::2] *= size[1] / input_size[1]
    boxes[:, 1::2] *= size[0] / input_size[0]
    boxes = clip(boxes, size)
    keep = nonempty(boxes)
    boxes, scores, mask_probs = boxes[keep], scores[keep], mask_probs[keep]
    return Detections(boxes, scores, paste_masks(mask_probs, boxes, size, threshold))
