"""Foreground and background masks of support images from proposals and attribution (docs/method.md §3).

All masks are bool tensors [H, W] (or [J, H, W]) on the attribution's grid; attribution maps
are float in [0, 1]. Nothing here knows where proposals come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ovdiff_cli.core.settings import MaskSettings


@dataclass(frozen=True)
class Selection:
    """fg and bg [H, W] bool (disjoint) of one image and how they were found.

    ``mode`` is "proposals" or "fallback". ``scores`` holds the mean attribution of every
    proposal of the list (uncovered region first; None for a dropped, empty one); ``fg_index``
    and ``bg_index`` point into that list (None in the fallback).
    """

    fg: torch.Tensor
    bg: torch.Tensor
    mode: str
    scores: list[float | None]
    fg_index: int | None = None
    bg_index: int | None = None


@dataclass(frozen=True)
class SetProposals:
    """The class-agnostic proposals of all images of a support set, as ``mask --save-proposals``
    keeps them: masks [J, S, S] bool, their scores [J] float32 and the support image each belongs
    to, image [J] int64; ``meta`` names the class and the proposer."""

    masks: torch.Tensor
    scores: torch.Tensor
    image: torch.Tensor
    meta: dict[str, Any]


def with_uncovered(instances: torch.Tensor) -> torch.Tensor:
    """[J, H, W] instance masks → [J + 1, H, W]: m⁰ = the pixels no instance covers, first."""
    uncovered = ~instances.any(dim=0) if instances.shape[0] else torch.ones(instances.shape[1:], dtype=torch.bool)
    return torch.cat([uncovered[None], instances.bool()])


def erode_cross(mask: torch.Tensor) -> torch.Tensor:
    """One binary erosion of [H, W] with the 3 × 3 cross; pixels outside the image count as set."""
    p = F.pad(mask[None, None].float(), (1, 1, 1, 1), value=1.0)[0, 0].bool()
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def fallback(attribution: torch.Tensor, settings: MaskSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """fg = A > fallback_fg, bg = A < fallback_bg, no erosion (docs/method.md §3.3)."""
    return attribution > settings.fallback_fg, attribution < settings.fallback_bg


def select(instances: torch.Tensor, attribution: torch.Tensor, settings: MaskSettings = MaskSettings()) -> Selection:
    """Eq. 1 with the refinements of docs/method.md §3.2 (R1, R2).

    instances [J, H, W] bool in detector order; attribution [H, W]. Empty proposals are dropped;
    proposals are ranked by mean attribution (ties: list order); each pixel goes to the best
    ranked proposal covering it; fg = the top one's pixels, bg = the lowest one's that got any,
    kept where A < bg_attn_max and eroded once. No instance left, or fewer than two proposals
    with pixels: the fallback thresholds.
    """
    props = with_uncovered(instances.bool())
    a = attribution.double()
    areas = props.flatten(1).sum(dim=1)
    sums = (props.double() * a).flatten(1).sum(dim=1)
    scores: list[float | None] = [float(s / n) if n > 0 else None for s, n in zip(sums, areas)]
    kept = [k for k, s in enumerate(scores) if s is not None]
    if not any(k >= 1 for k in kept):
        return _fallback(attribution, settings, scores)
    ranked = sorted(kept, key=lambda k: -scores[k])  # stable: ties keep list order
    owner = torch.full(a.shape, -1, dtype=torch.long)
    for k in ranked:
        owner[(owner < 0) & props[k]] = k
    received = [k for k in ranked if bool((owner == k).any())]
    if len(received) < 2:
        return _fallback(attribution, settings, scores)
    fg = owner == received[0]
    bg = erode_cross((owner == received[-1]) & (attribution < settings.bg_attn_max))
    return Selection(fg, bg, "proposals", scores, received[0], received[-1])


def _fallback(attribution: torch.Tensor, settings: MaskSettings, scores: list[float | None]) -> Selection:
    fg, bg = fallback(attribution, settings)
    return Selection(fg, bg, "fallback", scores)


def multi_otsu(values: torch.Tensor, bins: int = 256) -> tuple[float, float] | None:
    """Three-class multi-Otsu thresholds (t_lo, t_hi) of ``values``, or None when they cannot be split.

    As scikit-image's ``threshold_multiotsu(classes=3, nbins=bins)`` on float data: a histogram of
    ``bins`` equal bins over [min, max]; the two cut points that maximise the between-class
    variance Σ_k S_k² / P_k (P = probability mass, S = first moment of the bin centres), searched
    exhaustively, the first maximum in lexicographic order; thresholds are the centres of the
    last bin of the first and second class. None when fewer than 3 bins are occupied.
    """
    v = values.double().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return None
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    if int((hist > 0).sum()) < 3:
        return None
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    p = hist / hist.sum()
    cp = torch.cumsum(p, 0)                       # P of bins [0..i]
    cs = torch.cumsum(p * centres, 0)             # S of bins [0..i]

    def term(mass: torch.Tensor, moment: torch.Tensor) -> torch.Tensor:
        return torch.where(mass > 0, moment**2 / mass.clamp_min(1e-300), torch.zeros_like(mass))

    i = torch.arange(bins - 2).view(-1, 1)        # last bin of class 0
    j = torch.arange(1, bins - 1).view(1, -1)     # last bin of class 1
    valid = j > i
    p0, s0 = cp[i], cs[i]
    p1, s1 = cp[j] - cp[i], cs[j] - cs[i]
    p2, s2 = 1 - cp[j], cs[-1] - cs[j]
    var = term(p0, s0) + term(p1, s1) + term(p2, s2)
    var = torch.where(valid, var, torch.full_like(var, -1.0))
    best = int(torch.argmax(var.flatten()))       # first maximum in row-major = lexicographic order
    bi, bj = divmod(best, var.shape[1])
    return float(centres[bi]), float(centres[bj + 1])
