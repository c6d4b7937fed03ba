"""Mask selection (docs/method.md §3) on hand-made proposals and attribution maps, expected masks worked
out by hand; multi-Otsu against a brute-force search; erosion at the border."""

from __future__ import annotations

import itertools

import pytest
import torch

from ovdiff_cli.core.masks import erode_cross, fallback, multi_otsu, select, with_uncovered
from ovdiff_cli.core.settings import MaskSettings


def cols(h: int, w: int, *cs: int) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:, list(cs)] = True
    return m


def test_with_uncovered_puts_the_uncovered_region_first() -> None:
    inst = torch.stack([cols(2, 4, 0), cols(2, 4, 0, 1)])
    out = with_uncovered(inst)
    assert out.shape == (3, 2, 4)
    assert torch.equal(out[0], cols(2, 4, 2, 3)) and torch.equal(out[1:], inst)
    assert torch.equal(with_uncovered(torch.zeros(0, 2, 3, dtype=torch.bool)), torch.ones(1, 2, 3, dtype=torch.bool))


def test_erosion_uses_the_cross_and_the_border_does_not_erode() -> None:
    m = torch.tensor([[1, 1, 1, 0],
                      [1, 1, 1, 0],
                      [1, 1, 0, 0]], dtype=torch.bool)
    # (0,0): neighbours (0,1), (1,0) set, outside counts as set → kept; (1,1): all four set → kept;
    # (0,2): right (0,3) unset → gone; (1,2): (2,2) unset; (2,1): right (2,2) unset; (1,0),(2,0) kept
    expected = torch.tensor([[1, 1, 0, 0],
                             [1, 1, 0, 0],
                             [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(erode_cross(m), expected)
    assert torch.equal(erode_cross(torch.ones(3, 3, dtype=torch.bool)), torch.ones(3, 3, dtype=torch.bool))


A_OVERLAP = torch.tensor([[0.9, 0.9, 0.5, 0.1, 0.0, 0.0],
                          [0.9, 0.9, 0.5, 0.1, 0.0, 0.0],
                          [0.8, 0.8, 0.4, 0.1, 0.0, 0.0],
                          [0.8, 0.8, 0.4, 0.1, 0.0, 0.0]])


def test_overlapping_proposals_pixels_go_to_the_best_ranked_cover() -> None:
    m1, m2 = cols(4, 6, 0, 1, 2), cols(4, 6, 1, 2, 3)
    sel = select(torch.stack([m1, m2]), A_OVERLAP)
    # means: m0 (cols 4-5) = 0; m1 = 8.6/12; m2 = 5.6/12 → rank m1, m2, m0
    assert sel.mode == "proposals"
    assert sel.scores == pytest.approx([0.0, 8.6 / 12, 5.6 / 12])
    assert (sel.fg_index, sel.bg_index) == (1, 0)
    assert torch.equal(sel.fg, m1)  # the overlap (cols 1-2) belongs to m1
    # bg = m0 (cols 4-5, all A < 0.2), eroded: col 4 touches col 3 → gone; col 5 touches the border → kept
    assert torch.equal(sel.bg, cols(4, 6, 5))


def test_the_lowest_proposal_that_keeps_pixels_is_background() -> None:
    # m2 ranks below m1 but all its pixels are inside m1, so it receives none: bg is m0's
    m1, m2 = cols(4, 6, 0, 1, 2, 3), cols(4, 6, 3)
    a = A_OVERLAP.clone()
    a[:, 3] = 0.05  # m2's mean 0.05 > m0's 0
    sel = select(torch.stack([m1, m2]), a)
    assert sel.fg_index == 1 and sel.bg_index == 0
    assert torch.equal(sel.bg, cols(4, 6, 5))


A_TIES = torch.tensor([[0.6, 0.6, 0.6, 0.6],
                       [0.1, 0.1, 0.1, 0.1],
                       [0.1, 0.1, 0.1, 0.1]])


def _row0(*cs: int) -> torch.Tensor:
    m = torch.zeros(3, 4, dtype=torch.bool)
    m[0, list(cs)] = True
    return m


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_ties_are_broken_by_list_order(order) -> None:
    halves = [_row0(0, 1), _row0(2, 3)]
    first, second = halves[order[0]], halves[order[1]]
    sel = select(torch.stack([first, second]), A_TIES)
    assert sel.scores == pytest.approx([0.1, 0.6, 0.6])
    assert torch.equal(sel.fg, first) and sel.fg_index == 1
    # bg = rows 1-2 (m0), eroded: row 1 touches row 0 → gone; row 2 kept
    expected_bg = torch.zeros(3, 4, dtype=torch.bool)
    expected_bg[2] = True
    assert torch.equal(sel.bg, expected_bg)


def test_an_empty_proposal_is_dropped_and_scores_no_nan() -> None:
    empty = torch.zeros(4, 6, dtype=torch.bool)
    m1 = cols(4, 6, 0, 1, 2)
    sel = select(torch.stack([empty, m1]), A_OVERLAP)
    assert sel.scores[1] is None and sel.mode == "proposals"
    assert sel.fg_index == 2 and torch.equal(sel.fg, m1)
    # bg = m0 = cols 3-5 with A < 0.2 (all), eroded: col 3 touches col 2 → gone
    assert torch.equal(sel.bg, cols(4, 6, 4, 5))


@pytest.mark.parametrize("instances", [torch.zeros(0, 4, 6, dtype=torch.bool), torch.zeros(2, 4, 6, dtype=torch.bool)],
                         ids=["no proposal", "only empty proposals"])
def test_no_usable_proposal_falls_back_to_thresholds(instances) -> None:
    sel = select(instances, A_OVERLAP)
    assert sel.mode == "fallback" and sel.fg_index is None
    assert torch.equal(sel.fg, A_OVERLAP > 0.5) and torch.equal(sel.bg, A_OVERLAP < 0.2)
    assert sel.fg.sum() == 4 * 2  # the 0.9 and 0.8 columns (0.5 itself is not > 0.5)
    assert sel.bg.sum() == 4 * 3  # 0.1, 0.0, 0.0 columns


def test_a_proposal_covering_everything_alone_falls_back() -> None:
    sel = select(torch.ones(1, 4, 6, dtype=torch.bool), A_OVERLAP)
    assert sel.scores[0] is None  # m0 is empty
    assert sel.mode == "fallback"


def test_a_proposal_covering_everything_below_a_better_one_is_background() -> None:
    everything, small = torch.ones(4, 6, dtype=torch.bool), cols(4, 6, 0, 1)
    sel = select(torch.stack([everything, small]), A_OVERLAP)
    assert sel.scores[0] is None and (sel.fg_index, sel.bg_index) == (2, 1)
    assert torch.equal(sel.fg, small)
    # the rest (cols 2-5) with A < 0.2: cols 3-5; eroded: col 3 touches col 2 → gone
    assert torch.equal(sel.bg, cols(4, 6, 4, 5))


def test_a_proposal_covering_everything_above_the_others_wins_all_and_falls_back() -> None:
    a = torch.full((4, 6), 0.1)
    a[:, 5] = 0.0
    everything, low = torch.ones(4, 6, dtype=torch.bool), cols(4, 6, 5)
    sel = select(torch.stack([everything, low]), a)
    assert sel.mode == "fallback"  # only one proposal receives pixels (R2)


def test_masks_are_disjoint_and_finite_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        j = int(torch.randint(0, 5, (1,), generator=g))
        inst = torch.rand(j, 12, 10, generator=g) > torch.rand(j, 1, 1, generator=g)
        a = torch.rand(12, 10, generator=g)
        sel = select(inst, a)
        assert not (sel.fg & sel.bg).any()
        assert all(s is None or s == s for s in sel.scores)


def test_fallback_thresholds_are_settings() -> None:
    a = torch.tensor([[0.1, 0.3, 0.7]])
    fg, bg = fallback(a, MaskSettings(fallback_fg=0.25, fallback_bg=0.15))
    assert fg.tolist() == [[False, True, True]] and bg.tolist() == [[True, False, False]]


def brute_force_otsu(values: torch.Tensor, bins: int) -> tuple[float, float]:
    """The second method: every pair of cut bins, class means and weights written out plainly."""
    v = values.double().flatten()
    lo, hi = float(v.min()), float(v.max())
    width = (hi - lo) / bins
    idx = ((v - lo) / width).floor().clamp(max=bins - 1).long()
    centres = [lo + (k + 0.5) * width for k in range(bins)]
    best, arg = -1.0, None
    for i, j in itertools.combinations(range(bins - 1), 2):
        total = 0.0
        for a, b in ((0, i), (i + 1, j), (j + 1, bins - 1)):
            members = (idx >= a) & (idx <= b)
            w = float(members.double().mean())
            if w > 0:
                mean = float(sum(centres[k] * float((idx == k).double().mean()) for k in range(a, b + 1))) / w
                total += w * mean * mean
        if total > best + 1e-12:
            best, arg = total, (i, j)
    return centres[arg[0]], centres[arg[1]]


def test_multi_otsu_by_hand_on_three_values() -> None:
    v = torch.tensor([0.0] * 10 + [0.5] * 10 + [1.0] * 10)
    # 256 bins over [0, 1]: the values fill bins 0, 128 and 255; the first best cut is after bin 0
    # and after bin 128, whose centres are 0.5/256 and 128.5/256
    assert multi_otsu(v) == pytest.approx((0.5 / 256, 128.5 / 256))


@pytest.mark.parametrize("seed", range(4))
def test_multi_otsu_matches_a_brute_force_search(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.cat([torch.randn(40, generator=g) * 0.05 + c for c in (0.15, 0.5, 0.85)]).clamp(0, 1)
    assert multi_otsu(v, bins=16) == pytest.approx(brute_force_otsu(v, 16))


@pytest.mark.parametrize("values", [[0.3] * 5, [0.0, 1.0, 0.0, 1.0]], ids=["constant", "two values"])
def test_multi_otsu_gives_up_below_three_occupied_bins(values) -> None:
    assert multi_otsu(torch.tensor(values)) is None


def banded(seed: int) -> torch.Tensor:
    """Three bands of uniform values, [0, 0.2], [0.4, 0.6], [0.8, 1], of random sizes: the best cuts
    lie in the empty gaps, clear of any near-tie."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(100, 3000, (3,), generator=g).tolist()
    return torch.cat([torch.rand(n, generator=g) * 0.2 + lo for n, lo in zip(sizes, (0.0, 0.4, 0.8))])


@pytest.mark.parametrize("bins", [16, 64, 256])
@pytest.mark.parametrize("seed", range(4))
def test_multi_otsu_equals_scikit_image_where_both_define_it_alike(seed: int, bins: int) -> None:
    """scikit-image's threshold_multiotsu, a second implementation, on the same float data and bins.

    The two agree by construction on the histogram (``bins`` equal bins over [min, max], thresholds at
    bin centres) and on the search (exhaustive, first maximum). They may differ by design elsewhere,
    which these inputs stay clear of: scikit-image sums the probabilities in float32 (cuts whose
    between-class variances differ by less than float32 resolves can come out the other way), and
    its cumulative first moment starts at prob[0] instead of 0 (the lowest bin counts as if it sat at
    the second bin's place), which moves the first cut when the lowest bin holds much of the mass,
    as attribution maps clipped at 0 can. Ours computes in float64 with the bin centres as values.
    """
    filters = pytest.importorskip("skimage.filters")
    values = banded(seed)
    expected = filters.threshold_multiotsu(values.double().numpy(), classes=3, nbins=bins)
    assert multi_otsu(values, bins) == pytest.approx(tuple(expected), abs=1e-12)


def test_multi_otsu_equals_scikit_image_on_three_values_and_gives_up_with_it() -> None:
    filters = pytest.importorskip("skimage.filters")
    three = torch.tensor([0.0] * 10 + [0.5] * 10 + [1.0] * 10)
    expected = filters.threshold_multiotsu(three.double().numpy(), classes=3, nbins=256)
    assert multi_otsu(three) == pytest.approx(tuple(expected), abs=1e-12)
    two = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert multi_otsu(two) is None
    with pytest.raises(ValueError, match="only 2 different values"):
        filters.threshold_multiotsu(two.double().numpy(), classes=3, nbins=256)


def test_the_background_keeps_only_pixels_below_bg_attn_max() -> None:
    a = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.0, 0.0]).expand(4, 6)
    m1 = cols(4, 6, 0, 1, 2)
    # default 0.2: bg = cols 3-5, eroded (col 3 touches col 2) → cols 4-5
    assert torch.equal(select(m1[None], a).bg, cols(4, 6, 4, 5))
    # 0.05: bg = cols 4-5 before erosion; col 4 touches col 3 → col 5 only
    assert torch.equal(select(m1[None], a, MaskSettings(bg_attn_max=0.05)).bg, cols(4, 6, 5))
