"""Regions drawn over a photo, the one way every ovdiff picture draws them.

A region gets an outline in its colour as it is (so it matches the legend's swatch whatever the
photo beneath) and a lighter fill: the photo blended with the colour, so the photo stays
visible. Label maps and masks hold the same colours in their palettes, so a picture, its legend
and the PNG it was drawn from agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Width in pixels of a region's outline, drawn inside the region.
OUTLINE_WIDTH = 2
#: Share of the colour in a region's fill; the rest is the photo (or, in a legend, the paper).
FILL_ALPHA = 0.4


def outline(labels: torch.Tensor, width: int = OUTLINE_WIDTH) -> torch.Tensor:
    """bool [H, W]: the pixels of ``labels`` [H, W] (integers) that have a pixel of another label
    within ``width`` pixels (the (2·width+1)² square around them). The image's edge is no
    boundary: a region that fills the picture has no outline."""
    x = labels.to(torch.float32)[None, None]  # labels ≤ 2^24 are exact in float32
    padded = F.pad(x, (width, width, width, width), mode="replicate")
    k = 2 * width + 1
    hi = F.max_pool2d(padded, k, stride=1)
    lo = -F.max_pool2d(-padded, k, stride=1)
    return ((hi != x) | (lo != x))[0, 0]


def blend(under: torch.Tensor, colour: torch.Tensor, alpha: float = FILL_ALPHA) -> torch.Tensor:
    """uint8 [..., 3]: round((1 − alpha)·under + alpha·colour), halves rounded up; ``under`` and
    ``colour`` uint8 [..., 3] (broadcast)."""
    v = (1 - alpha) * under.to(torch.float64) + alpha * colour.to(torch.float64)
    return torch.floor(v + 0.5).clamp(0, 255).to(torch.uint8)


def paint(image: torch.Tensor, labels: torch.Tensor, colours: torch.Tensor, painted: Sequence[int]) -> torch.Tensor:
    """The regions of ``labels`` [H, W] over ``image`` uint8 [H, W, 3] → uint8 [H, W, 3].

    ``colours`` uint8 [K, 3] holds each label's colour (labels < K). Every label in ``painted``
    gets the :func:`blend` fill and an :func:`outline` in its colour as it is; other labels
    (background, "neither") leave the photo as it is.
    """
    labels = labels.to(torch.int64)
    out = image.clone()
    edge = outline(labels)
    for v in painted:
        region = labels == int(v)
        if not bool(region.any()):
            continue
        c = colours[int(v)].to(torch.uint8)
        out[region] = blend(image[region], c)
        out[region & edge] = c
    return out


#: Foreground crimson, background blue: in mask overlays, explain's pictures and the masks' own
#: palette (formats/supportset.py), so a mask PNG and its overlay show fg and bg alike.
FG_COLOUR = (220, 20, 60)
BG_COLOUR = (30, 144, 255)


def overlay(image: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """A picture for a person to check masks: image [3, H, W] in [0, 1], fg/bg [H, W] bool →
    uint8 [H, W, 3], fg and bg drawn as :func:`paint` draws regions
    (outline in full colour, lighter fill); other pixels stay as they are."""
    labels = torch.zeros(fg.shape, dtype=torch.int64)
    labels[bg] = 2
    labels[fg] = 1
    colours = torch.tensor([(0, 0, 0), FG_COLOUR, BG_COLOUR], dtype=torch.uint8)
    photo = (image.permute(1, 2, 0).float().clamp(0, 1) * 255).round().to(torch.uint8)
    return paint(photo, labels, colours, painted=(1, 2))
