"""Cross-attention recording and attribution maps as tensor functions (docs/method.md §1–2), and the
records they fill: :class:`CrossAttention`, :class:`AttentionBatch`, :class:`Attribution`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CrossAttention:
    """Recorded cross-attention of one support set (docs/method.md §1).

    attn [N, L, T, G, G] float32: per image, layer and recorded token the sum of ``counts``
    [N, L] int64 clamped maps (steps × heads); positions [T] int64 index the prompt's tokens
    (0..``core.tokens.CONTEXT_LENGTH`` − 1, BOS at 0); phrase_positions [P] int64 are a subset
    of positions. ``tokens`` are the T token strings, ``layers`` the L layer names; ``meta``
    holds the prompt and the generation parameters.
    """

    attn: torch.Tensor
    counts: torch.Tensor
    positions: torch.Tensor
    phrase_positions: torch.Tensor
    tokens: tuple[str, ...]
    layers: tuple[str, ...]
    meta: dict[str, Any]


@dataclass(frozen=True)
class AttentionBatch:
    """The recorded attention of one finished batch of B images while a support set is sampled.

    attn [B, L, T, G, G] and counts [B, L] as in :class:`CrossAttention`; indices [B] int64 are
    the images' numbers in the set; ``params`` are the generation parameters of the batch.
    """

    attn: torch.Tensor
    counts: torch.Tensor
    indices: torch.Tensor
    params: dict[str, Any]


@dataclass(frozen=True)
class Attribution:
    """Attribution maps of one support set (docs/method.md §2): ``maps`` A [N, S, S] at image size and
    ``maps64`` A^64 [N, G, G] on the attention grid, both float32 in [0, 1]."""

    maps: torch.Tensor
    maps64: torch.Tensor
    meta: dict[str, Any]


def grid_of(n_queries: int) -> int:
    """Side of the square grid a layer's ``n_queries`` image tokens form (64, 32, 16 or 8 for SD)."""
    g = math.isqrt(n_queries)
    if g * g != n_queries:
        raise ValueError(f"{n_queries} image tokens do not form a square grid")
    return g


def accumulate_maps(probs: torch.Tensor, positions: torch.Tensor, out: int = 64) -> torch.Tensor:
    """Per-head attention maps of chosen text positions, upsampled, clamped and summed over heads.

    probs [B, H, Q, K]: softmax(QKᵀ/√d) over K text positions, Q = g² image tokens in row-major
    order. positions [T] index K. Each head's column is reshaped to g × g, upsampled bicubically
    (align_corners=False) to ``out`` × ``out`` and clamped at 0 *before* the heads are summed,
    as the method does. Returns float32 [B, T, out, out].
    """
    b, h, q, _ = probs.shape
    g = grid_of(q)
    t = positions.numel()
    maps = probs[..., positions].permute(0, 1, 3, 2).reshape(b * h * t, 1, g, g).float()
    if g != out:
        maps = F.interpolate(maps, size=(out, out), mode="bicubic", align_corners=False)
    return maps.clamp_min(0).view(b, h, t, out, out).sum(dim=1)


def raw_attribution(attn: torch.Tensor, counts: torch.Tensor, token_index: Sequence[int],
                    layers: Sequence[int]) -> torch.Tensor:
    """Â of docs/method.md §2: the mean over the phrase's tokens of the mean over steps, layers and heads.

    attn [N, L, T, G, G] holds per (image, layer, token) the sum of ``counts`` [N, L] maps;
    ``token_index`` indexes T, ``layers`` indexes L. Returns float32 [N, G, G].
    """
    if not token_index or not layers:
        raise ValueError("attribution needs at least one token and one layer")
    sel = attn[:, list(layers)][:, :, list(token_index)].float()  # [N, L', P, G, G]
    total = counts[:, list(layers)].sum(dim=1).clamp_min(1).float()  # maps summed per token: steps·|L'|·heads
    return sel.sum(dim=1).mean(dim=1) / total.view(-1, 1, 1)


def minmax(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image min–max normalisation of [N, H, W] with the divisor clamped at ``eps``.

    A constant map becomes all zeros.
    """
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(eps)


def attribution_maps(raw: torch.Tensor, size: int = 512, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """A^64 = minmax(Â) on the attention grid, and A = minmax(bilinear(A^64) to size × size).

    raw [N, G, G] → ([N, G, G], [N, size, size]), both float32 in [0, 1].
    """
    a_grid = minmax(raw.float(), eps)
    up = F.interpolate(a_grid[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return a_grid, minmax(up, eps)
