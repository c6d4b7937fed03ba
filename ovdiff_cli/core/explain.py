"""From pixels back to the prototypes that decided them (docs/method.md §9) as tensor functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Vote:
    """A bank row's share of the query pixels and its mean similarity there."""

    row: int
    share: float
    similarity: float


def vote(rows: torch.Tensor, sims: torch.Tensor, query: torch.Tensor, top: int = 3) -> tuple[list[Vote], float]:
    """The ``top`` rows that decided most of the ``query`` pixels, and the share of query pixels no
    prototype decided (background only through the ≤ 0 floor: row −1).

    rows [H, W] int64, sims [H, W], query [H, W] bool. Ties in count go to the lower row.
    """
    r = rows[query]
    total = int(r.numel())
    if total == 0:
        return [], 0.0
    s = sims[query]
    decided = r >= 0
    floored = 1 - int(decided.sum()) / total
    values, counts = torch.unique(r[decided], return_counts=True)
    order = sorted(range(values.numel()), key=lambda k: (-int(counts[k]), int(values[k])))[:top]
    out = [Vote(int(values[k]), int(counts[k]) / total, float(s[decided][r[decided] == values[k]].mean()))
           for k in order]
    return out, floored


def cell_blocks(cells: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """Grid cells (y, x) [P, 2] of a gh × gw grid → the bool [size, size] mask of their pixel blocks
    (each cell an (size/gh) × (size/gw) block: 8 × 8 for 64 cells at 512)."""
    gh, gw = grid
    m = torch.zeros(gh, gw)
    if cells.numel():
        m[cells[:, 0], cells[:, 1]] = 1
    return F.interpolate(m[None, None], size=(size, size), mode="nearest")[0, 0].bool()
