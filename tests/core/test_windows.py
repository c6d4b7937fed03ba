"""Test-time resizing and the sliding-window layout (docs/method.md §7.1–7.2)."""

from __future__ import annotations

import pytest
import torch

from ovdiff_cli.core.windows import axis_windows, resized_size, windows


def test_resize_keeps_the_aspect_with_short_side_448() -> None:
    assert resized_size(375, 500) == (448, 597)
    assert resized_size(500, 375) == (597, 448)
    assert resized_size(100, 100) == (448, 448)  # small images are upscaled
    assert resized_size(375, 500, 224) == (224, 299)


def test_axis_windows_by_hand() -> None:
    assert axis_windows(597, 448, 224) == [(0, 448), (149, 597)]
    assert axis_windows(597, 336, 224) == [(0, 336), (224, 560), (261, 597)]
    assert axis_windows(448, 336, 224) == [(0, 336), (112, 448)]
    assert axis_windows(448, 448, 224) == [(0, 448)]
    assert axis_windows(200, 336, 224) == [(0, 200)]  # shorter than the crop: one clipped window


def test_the_papers_examples() -> None:
    ws = windows(448, 597)
    assert len(ws) == 2 + 6 + 1 and ws[-1] == (0, 448, 0, 597)
    assert ws[:2] == [(0, 448, 0, 448), (0, 448, 149, 597)]
    assert len(windows(448, 448)) == 1 + 4 + 1
    assert windows(448, 448)[0] == windows(448, 448)[-1]  # the whole image repeats the 448 window: kept
    assert windows(448, 597, whole_image=False)[-1] != (0, 448, 0, 597)


@pytest.mark.parametrize("h,w", [(448, 597), (448, 448), (597, 448), (448, 1200), (500, 448), (200, 120)])
def test_every_pixel_is_covered_and_counted(h: int, w: int) -> None:
    ws = windows(h, w)
    count = torch.zeros(h, w, dtype=torch.int64)
    for y0, y1, x0, x1 in ws:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 == min(448, h) or y1 - y0 == min(336, h) or (y0, y1) == (0, h)
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1
    # a second method: each pixel's count = Σ over crops of (row windows covering it) × (column windows covering it) + 1
    for y, x in [(0, 0), (h // 2, w // 3), (h - 1, w - 1)]:
        expected = 1
        for crop, stride in ((448, 224), (336, 224)):
            rows = sum(1 for a, b in axis_windows(h, crop, stride) if a <= y < b)
            cols = sum(1 for a, b in axis_windows(w, crop, stride) if a <= x < b)
            expected += rows * cols
        assert int(count[y, x]) == expected
