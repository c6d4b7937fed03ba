"""Regions over a photo: 2-pixel outlines in the exact colour, a lighter blended fill."""

from __future__ import annotations

import torch

from ovdiff_cli.core.pictures import blend, outline, overlay, paint


def square(n: int, lo: int, hi: int, value: int = 1) -> torch.Tensor:
    labels = torch.zeros(n, n, dtype=torch.int64)
    labels[lo:hi, lo:hi] = value
    return labels


def test_outline_is_two_pixels_inside_each_region_and_not_along_the_image_edge() -> None:
    labels = square(9, 1, 7)                         # a 6 × 6 square of 1 in a frame of 0
    ring = square(9, 1, 7, 1).bool() & ~square(9, 3, 5, 1).bool()
    assert torch.equal(outline(labels) & (labels == 1), ring)
    # the frame of 0 is one pixel wide: all of it borders the square
    assert bool(outline(labels)[labels == 0].all())
    assert not bool(outline(torch.full((5, 5), 3)).any())  # one region, the whole picture: no outline
    # a region along the image edge: only its side towards the other region is outlined
    half = torch.zeros(4, 8, dtype=torch.int64)
    half[:, 4:] = 2
    assert outline(half)[0].tolist() == [False, False, True, True, True, True, False, False]


def test_blend_is_sixty_percent_photo_forty_percent_colour() -> None:
    # 0.6·(100, 200, 50) + 0.4·(128, 0, 0) = (111.2, 120, 30) → (111, 120, 30)
    assert blend(torch.tensor([100, 200, 50], dtype=torch.uint8),
                 torch.tensor([128, 0, 0], dtype=torch.uint8)).tolist() == [111, 120, 30]
    # 0.6·255 + 0.4·128 = 204.2; 0.6·3 = 1.8 → 2 (rounded, not truncated)
    assert blend(torch.tensor([255, 3, 255], dtype=torch.uint8),
                 torch.tensor([128, 0, 0], dtype=torch.uint8)).tolist() == [204, 2, 153]


def test_paint_outlines_in_the_colour_fills_with_the_blend_and_leaves_other_labels() -> None:
    photo = torch.tensor([100, 200, 50], dtype=torch.uint8).expand(9, 9, 3).clone()
    labels = square(9, 1, 7)
    colours = torch.tensor([(0, 0, 0), (128, 0, 0)], dtype=torch.uint8)
    out = paint(photo, labels, colours, painted=(1,))
    assert out[1, 1].tolist() == [128, 0, 0] and out[2, 5].tolist() == [128, 0, 0]   # outline, exact colour
    assert out[3, 3].tolist() == [111, 120, 30] and out[4, 4].tolist() == [111, 120, 30]  # fill
    assert out[0, 0].tolist() == [100, 200, 50]     # label 0 is not painted: the photo
    assert torch.equal(photo[0, 0], torch.tensor([100, 200, 50], dtype=torch.uint8))  # the input is untouched


def test_overlay_fills_lighter_inside_and_outlines_in_full_colour() -> None:
    image = torch.zeros(3, 7, 7)
    fg = torch.zeros(7, 7, dtype=torch.bool)
    fg[1:6, 1:6] = True
    bg = torch.zeros(7, 7, dtype=torch.bool)
    bg[6, :] = True
    out = overlay(image, fg, bg)
    assert out.dtype == torch.uint8 and out.shape == (7, 7, 3)
    assert out[3, 3].tolist() == [88, 8, 24]        # the fill: 0.4 × (220, 20, 60) over black
    assert out[1, 1].tolist() == [220, 20, 60]      # the outline, 2 px wide: rows/columns 1 and 2
    assert out[2, 3].tolist() == [220, 20, 60]
    assert out[6, 3].tolist() == [30, 144, 255]     # background blue: a one-row strip is all outline
    assert out[0, 0].tolist() == [0, 0, 0]          # neither: the image as it is
