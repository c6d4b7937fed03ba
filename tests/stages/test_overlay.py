"""segment's overlay: regions drawn as their legend swatches are, and every class in the legend."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ovdiff_cli.core.pictures import BG_COLOUR, FG_COLOUR, overlay
from ovdiff_cli.formats.labelmap import PALETTE, legend
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.stages.overlay import NO_PIXELS, NOT_IN_IMAGE, LegendEntry, legend_entries, overlay_picture, swatch

NAMES = ["cat", "dog", "sky", "boat"]


def two_regions() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint8)
    labels[2:12, 2:14] = 1      # cat
    labels[8:18, 16:28] = 3     # sky
    return labels


def test_the_legend_names_every_class_and_says_which_clip_dropped() -> None:
    active = [True, True, False, True, True]     # CLIP dropped dog; boat kept, but no pixel chose it
    entries = legend_entries(two_regions(), NAMES, active)
    assert entries == [LegendEntry(0, "background", (0, 0, 0)), LegendEntry(1, "cat", (128, 0, 0)),
                       LegendEntry(3, "sky", (128, 128, 0)),
                       LegendEntry(2, "dog", (0, 128, 0), "not in image (CLIP)"),
                       LegendEntry(4, "boat", (0, 0, 128), "no pixels")]
    assert NOT_IN_IMAGE == "not in image (CLIP)"
    # without the pre-filter nothing was dropped
    assert [e.note for e in legend_entries(two_regions(), NAMES, None)] == ["", "", "", NO_PIXELS, NO_PIXELS]


def test_a_swatch_is_drawn_as_a_region_is() -> None:
    s = swatch(LegendEntry(1, "cat", (128, 0, 0)))
    assert s.shape == (12, 12, 3)
    assert s[0, 0].tolist() == s[1, 6].tolist() == s[11, 10].tolist() == [128, 0, 0]   # 2-px outline
    # the fill over the legend's white: 0.6·255 + 0.4·(128, 0, 0) = (204.2, 153, 153)
    assert s[2, 2].tolist() == s[6, 6].tolist() == [204, 153, 153]


def test_the_overlay_draws_outlines_in_the_palette_colour_and_lists_dropped_classes_below() -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[...] = (40, 160, 40)                     # grass
    labels = two_regions()
    with_dropped = overlay_picture(rgb, labels, NAMES, [True, True, False, True, True])
    assert with_dropped.shape[1] >= 30 and with_dropped.shape[0] > 20
    top = with_dropped[:20, :30]
    assert top[2, 5].tolist() == [128, 0, 0]     # cat's outline: the label map's own colour, not blended
    # cat's fill: 0.6·(40, 160, 40) + 0.4·(128, 0, 0) = (75.2, 96, 24)
    assert top[6, 7].tolist() == [75, 96, 24]
    assert top[17, 20].tolist() == [128, 128, 0]  # sky's outline
    assert top[0, 0].tolist() == [40, 160, 40]   # background: the photo
    # below: 4 px margins and 16-px rows, one per label with pixels (three, one column in so narrow a
    # picture), then at least one line per note (two notes)
    rows, rest = divmod(with_dropped.shape[0] - 20 - 8, 16)
    assert rest == 0 and rows >= 5


def test_label_maps_carry_their_legend() -> None:
    assert legend(["cat", "dog"]) == [[0, "background", "#000000"], [1, "cat", "#800000"], [2, "dog", "#008000"]]


def test_mask_pngs_use_the_overlay_colours(tmp_path) -> None:
    s = SupportSet(tmp_path / "cat")
    m = np.array([[0, 1, 2]], np.uint8)
    s.write_mask(0, m, {})
    with Image.open(s.mask_path(0)) as im:
        assert im.mode == "P"
        pal = im.getpalette()[:9]
        rgb = np.asarray(im.convert("RGB"))
    assert pal == [0, 0, 0, *FG_COLOUR, *BG_COLOUR]
    assert rgb[0].tolist() == [[0, 0, 0], list(FG_COLOUR), list(BG_COLOUR)]
    assert (s.read_mask(0)[0] == m).all()  # still indices
    assert PALETTE[1].tolist() != list(FG_COLOUR)  # (the masks' palette is their own, not the label maps')
    # and the mask overlay draws fg and bg in those palette entries (halves of a 4 × 4 image: all outline)
    fg = torch.zeros(4, 4, dtype=torch.bool)
    fg[:, :2] = True
    pic = overlay(torch.rand(3, 4, 4), fg, ~fg).numpy()
    assert (pic[:, :2] == pal[3:6]).all() and (pic[:, 2:] == pal[6:9]).all()
