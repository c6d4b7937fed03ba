"""Test-time resizing and sliding windows (docs/method.md §7.1–7.2)."""

from __future__ import annotations

from collections.abc import Sequence

#: A window as (y0, y1, x0, x1) in the resized image, end exclusive.
Window = tuple[int, int, int, int]


def resized_size(h: int, w: int, short_side: int = 448) -> tuple[int, int]:
    """(H, W) with the short side ``short_side`` and the aspect ratio kept (rounded): 375×500 → 448×597."""
    scale = short_side / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def axis_windows(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Windows along one axis: n = ⌊max(L − c + s − 1, 0)/s⌋ + 1; the i-th ends at min(i·s + c, L) and
    starts c before its end (never before 0), so the last one sits flush with the border."""
    n = max(length - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(n):
        end = min(i * stride + crop, length)
        out.append((max(end - crop, 0), end))
    return out


def windows(h: int, w: int, crops: Sequence[tuple[int, int]] = ((448, 224), (336, 224)),
            whole_image: bool = True) -> list[Window]:
    """Every (crop, stride)'s row × column windows, then the whole image as one more window."""
    out: list[Window] = []
    for crop, stride in crops:
        rows, columns = axis_windows(h, crop, stride), axis_windows(w, crop, stride)
        out += [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in columns]
    if whole_image:
        out.append((0, h, 0, w))
    return out
