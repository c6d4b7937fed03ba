"""Boxes as detectron2 computes them: anchors, delta decoding, clipping (docs/method.md §3.1).

Boxes are float32 [R, 4] (x0, y0, x1, y1) in input pixels. The order and form of every float
operation follow detectron2, so decoded boxes equal its boxes bit for bit on the CPU.
"""

from __future__ import annotations

import math

import torch

#: Box deltas' log-width and log-height are clamped here before ``exp`` (detectron2's default).
SCALE_CLAMP = math.log(1000.0 / 16)


def cell_anchors(size: float, ratios: tuple[float, ...]) -> torch.Tensor:
    """The anchors of one location, centred on 0: [len(ratios), 4].

    Each has area ``size²`` and height/width ``ratio``, left unrounded (torchvision rounds the
    corners to integers): size 32, ratio 0.5 gives w = √(1024 / 0.5) = 45.2548…, h = 22.6274….
    """
    corners = []
    for ratio in ratios:
        width = math.sqrt(size * size / ratio)  # in float64, rounded to float32 once at the end
        half_w, half_h = width / 2.0, ratio * width / 2.0
        corners.append((-half_w, -half_h, half_w, half_h))
    return torch.tensor(corners, dtype=torch.float32)


def grid_anchors(cell: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """Every location's anchors on a [height, width] grid of ``stride``: [height · width · A, 4].

    Location (y, x) is shifted by (x · stride, y · stride) (offset 0); rows run location-major,
    anchor-minor, the order of the RPN's flattened outputs.
    """
    ys = torch.arange(height, device=cell.device, dtype=torch.float32) * stride
    xs = torch.arange(width, device=cell.device, dtype=torch.float32) * stride
    yx = torch.cartesian_prod(ys, xs).view(-1, 2)  # y-major, x fastest
    shift = yx.flip(1).repeat(1, 2)  # (x, y, x, y) per location
    return (shift.unsqueeze(1) + cell.unsqueeze(0)).flatten(0, 1)


def _move_axis(lo: torch.Tensor, hi: torch.Tensor, d_centre: torch.Tensor, d_size: torch.Tensor,
               w_centre: float, w_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of :func:`decode`: interval [lo, hi] [R] → shifted and rescaled [R], [R]."""
    length = hi - lo
    centre = lo + 0.5 * length
    # dividing by the Python float (not multiplying by its inverse) keeps detectron2's rounding
    new_centre = (d_centre / w_centre) * length + centre
    new_length = torch.exp(torch.clamp(d_size / w_size, max=SCALE_CLAMP)) * length
    return new_centre - 0.5 * new_length, new_centre + 0.5 * new_length


def decode(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, float, float, float]) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) deltas [R, 4] to ``boxes`` [R, 4] → [R, 4], in float32.

    The centre moves by (dx / wx) · width; the size scales by exp(min(dw / ww, log(1000/16))).
    """
    dx, dy, dw, dh = deltas.float().unbind(1)
    x0, y0, x1, y1 = boxes.float().unbind(1)
    wx, wy, ww, wh = weights
    new_x0, new_x1 = _move_axis(x0, x1, dx, dw, wx, ww)
    new_y0, new_y1 = _move_axis(y0, y1, dy, dh, wy, wh)
    return torch.stack((new_x0, new_y0, new_x1, new_y1), dim=1)


def clip(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boxes [R, 4] clamped into an image of ``size`` = (height, width)."""
    h, w = size
    return torch.stack((boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h),
                        boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)), dim=-1)


def nonempty(boxes: torch.Tensor) -> torch.Tensor:
    """bool [R]: width and height both above zero."""
    return ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)


def area(boxes: torch.Tensor) -> torch.Tensor:
    """[R]: (x1 − x0) · (y1 − y0)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
