"""Attention maps and attribution (docs/method.md §1–2) against values worked out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdiff_cli.core.attention import accumulate_maps, attribution_maps, grid_of, minmax, raw_attribution


def test_grid_of() -> None:
    assert [grid_of(q) for q in (4096, 1024, 256, 64)] == [64, 32, 16, 8]
    with pytest.raises(ValueError, match="square"):
        grid_of(10)


def test_columns_are_read_row_major_and_summed_over_heads() -> None:
    # B=1, heads=2, Q=4 (a 2 × 2 grid), K=3 text positions
    probs = torch.tensor([[
        [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.5, 0.0, 0.5], [0.2, 0.6, 0.2]],
        [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]],
    ]])
    out = accumulate_maps(probs, torch.tensor([1, 2]), out=2)
    assert out.shape == (1, 2, 2, 2)
    # position 1: head 0 column (0.2, 0.3, 0.0, 0.6) + head 1 column (1.0, 0.5, 0.1, 0.4)
    assert torch.allclose(out[0, 0], torch.tensor([[1.2, 0.8], [0.1, 1.0]]))
    assert torch.allclose(out[0, 1], torch.tensor([[0.7, 0.4], [1.3, 0.4]]))


def test_each_head_is_upsampled_bicubically_and_clamped_before_the_sum() -> None:
    # a sharp single-cell map overshoots below zero under bicubic upsampling
    sharp = torch.zeros(4, 4)
    sharp[1, 1] = 1.0
    flat = torch.full((4, 4), 0.05)
    probs = torch.stack([sharp.flatten(), flat.flatten()])[None, :, :, None]  # [1, 2, 16, 1]
    out = accumulate_maps(probs, torch.tensor([0]), out=16)[0, 0]

    def up(m: torch.Tensor) -> torch.Tensor:
        return F.interpolate(m[None, None], size=(16, 16), mode="bicubic", align_corners=False)[0, 0]

    assert up(sharp).min() < -0.05  # the overshoot the clamp exists for
    expected = up(sharp).clamp_min(0) + up(flat).clamp_min(0)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, (up(sharp) + up(flat)).clamp_min(0), atol=1e-3)


def test_raw_attribution_is_a_mean_over_maps_and_tokens() -> None:
    # N=1, L=2 layers, T=3 tokens, 1 × 2 grid; counts: 3 maps summed on layer 0, 5 on layer 1
    attn = torch.zeros(1, 2, 3, 1, 2)
    attn[0, 0, 0] = torch.tensor([[3.0, 6.0]])
    attn[0, 1, 0] = torch.tensor([[5.0, 2.0]])
    attn[0, 0, 2] = torch.tensor([[8.0, 0.0]])
    attn[0, 1, 2] = torch.tensor([[0.0, 8.0]])
    attn[0, :, 1] = 100.0  # a token that is not attributed
    counts = torch.tensor([[3, 5]])
    # token 0: (3+5, 6+2)/8 = (1, 1); token 2: (8, 8)/8 = (1, 1) → mean (1, 1)
    got = raw_attribution(attn, counts, [0, 2], [0, 1])
    assert torch.allclose(got, torch.tensor([[[1.0, 1.0]]]))
    # layer 0 only: token 0 (3, 6)/3 = (1, 2); token 2 (8, 0)/3 → mean (11/6, 1)
    got = raw_attribution(attn, counts, [0, 2], [0])
    assert torch.allclose(got, torch.tensor([[[11 / 6, 1.0]]]))
    with pytest.raises(ValueError):
        raw_attribution(attn, counts, [], [0])


def test_minmax_per_image_and_constant_maps_become_zero() -> None:
    x = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]])
    got = minmax(x)
    assert torch.allclose(got[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(got[1], torch.zeros(2, 2))
    # a range below eps is divided by eps, not by itself
    tiny = torch.tensor([[[0.0, 1e-8]]])
    assert torch.allclose(minmax(tiny), torch.tensor([[[0.0, 1e-2]]]))


def test_attribution_maps_normalise_on_the_grid_then_at_image_size() -> None:
    raw = torch.tensor([[[2.0, 4.0], [2.0, 4.0]]])
    a64, a = attribution_maps(raw, size=4)
    assert torch.equal(a64, torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    # bilinear 2 → 4, align_corners=False: source x = (i + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25
    # (clamped at the edges) → columns 0, 0.25, 0.75, 1; already in [0, 1]
    row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.allclose(a, row.expand(1, 4, 4))
    assert a.dtype == a64.dtype == torch.float32
