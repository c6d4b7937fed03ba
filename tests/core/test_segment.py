"""Eq. 4, the ensemble, the decision rule and PAMR (docs/method.md §7) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from ovdiff_cli.core.segment import Accumulator, BankRows, BestRows, class_scores, decide, pamr, pamr_affinity
from ovdiff_cli.core.settings import SegmentSettings

S = 1 / math.sqrt(2)
# features [D=2, 1, 2]: pixel a = (3, 0) (along x), pixel b = (1, 1) (diagonal)
FEATS = torch.tensor([[[3.0, 1.0]], [[0.0, 1.0]]])
# fg rows: class 1 = (1, 0) and (0, 1); class 2 = (0.6, 0.8); bg rows: owner 1 (−1, 0), owner 2 (0, 1)
FG = BankRows(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([1, 1, 2]))
BG = BankRows(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 2]))
ALL = torch.tensor([True, True, True])


def test_eq4_by_hand() -> None:
    scores, rows = class_scores(FEATS, FG, BG, ALL)
    # pixel a: class 1 max(1, 0) = 1 (row 0); class 2: 0.6; bg: max(−1 (owner 1), 0 (owner 2)) = 0 (row 1)
    # pixel b: class 1 max(S, S) = S (row 0, the first max); class 2: (0.6 + 0.8)·S = 1.4 S; bg max(−S, S) = S
    assert scores[:, 0, 0].tolist() == pytest.approx([0.0, 1.0, 0.6])
    assert scores[:, 0, 1].tolist() == pytest.approx([S, S, 1.4 * S])
    assert rows[:, 0, 0].tolist() == [1, 0, 2] and rows[:, 0, 1].tolist() == [1, 0, 2]


def test_inactive_classes_score_minus_one_and_lose_their_background() -> None:
    scores, rows = class_scores(FEATS, FG, BG, torch.tensor([True, True, False]))
    assert scores[2].flatten().tolist() == [-1.0, -1.0] and rows[2].flatten().tolist() == [-1, -1]
    # bg from owner 1 only: −1 at a, −S at b
    assert scores[0].flatten().tolist() == pytest.approx([-1.0, -S])
    kept = class_scores(FEATS, FG, BG, torch.tensor([True, True, False]), background_owners=torch.tensor([1, 2]))[0]
    assert kept[0].flatten().tolist() == pytest.approx([0.0, S])  # --keep-inactive-bg
    empty = BankRows(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert class_scores(FEATS, FG, empty, ALL)[0][0].flatten().tolist() == [-1.0, -1.0]


def test_the_ensemble_is_the_plain_mean_over_covering_windows() -> None:
    acc = Accumulator(2, 1, 3, "cpu")
    acc.add(torch.tensor([[[0.2, 0.4]], [[0.0, 1.0]]]), (0, 1, 0, 2))
    acc.add(torch.tensor([[[0.6, 0.8]], [[0.5, -0.5]]]), (0, 1, 1, 3))
    mean = acc.mean()
    # pixel 0: window A only; pixel 1: (0.4 + 0.6)/2, (1.0 + 0.5)/2; pixel 2: window B only
    assert mean[0, 0].tolist() == pytest.approx([0.2, 0.5, 0.8])
    assert mean[1, 0].tolist() == pytest.approx([0.0, 0.75, -0.5])
    assert acc.count.tolist() == [[1, 2, 1]]


def test_window_scores_are_upsampled_bilinearly_to_the_window() -> None:
    acc = Accumulator(1, 1, 4, "cpu")
    acc.add(torch.tensor([[[0.0, 1.0]]]), (0, 1, 0, 4))
    # 2 → 4, align_corners=False: 0, 0.25, 0.75, 1
    assert acc.mean()[0, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])
    with pytest.raises(ValueError, match="no window"):
        Accumulator(1, 2, 2, "cpu").mean()


def test_floor_ties_and_background() -> None:
    s = torch.tensor([[[0.3, -0.2, 0.4, 0.5]],      # background
                      [[0.5, -0.1, 0.4, 0.2]],      # class 1
                      [[0.1, -0.3, 0.1, 0.5]]])     # class 2
    # pixel 0: class 1; pixel 1: all ≤ 0 → background; pixel 2: tie bg/class 1 → background; pixel 3: tie → bg
    assert decide(s).tolist() == [[1, 0, 0, 0]]
    assert decide(s, SegmentSettings(background=False)).tolist() == [[1, 1, 1, 2]]  # no floor, classes only
    # a bank without bg prototypes: S_0 = 0 and class scores ≤ 0.75 → 0
    z = s.clone()
    z[1, 0, 0] = 0.8
    assert decide(z, bg_zero=True).tolist() == [[1, 0, 0, 0]]


def test_best_rows_keep_the_best_window_and_mark_floored_pixels() -> None:
    best = BestRows(2, 1, 2, "cpu")
    best.add(torch.tensor([[[0.1, 0.2]], [[0.5, 0.5]]]), torch.tensor([[[3, 4]], [[7, 8]]]), (0, 1, 0, 2))
    best.add(torch.tensor([[[0.3, 0.1]], [[0.4, 0.9]]]), torch.tensor([[[5, 6]], [[9, 10]]]), (0, 1, 0, 2))
    rows, sims = best.of(torch.tensor([[1, 0]]), torch.tensor([[False, True]]))
    assert rows.tolist() == [[7, -1]] and sims[0, 0] == pytest.approx(0.5) and math.isnan(float(sims[0, 1]))


def direct_pamr(scores: torch.Tensor, image: torch.Tensor, iterations: int, dilations: tuple[int, ...]) -> torch.Tensor:
    """The second method: PAMR written pixel by pixel with clamped (replicate) neighbours."""
    c, h, w = scores.shape
    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

    def at(t: torch.Tensor, y: int, x: int) -> torch.Tensor:
        return t[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    alpha = torch.zeros(len(offsets), h, w, dtype=torch.float64)
    img = image.double()
    for y in range(h):
        for x in range(w):
            values = []
            for d in dilations:
                values += [at(img, y + dy * d, x + dx * d) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            sigma = torch.stack(values).std(dim=0, unbiased=True)            # 54 values per channel
            kappa = torch.stack([(-(img[:, y, x] - at(img, y + oy, x + ox)).abs() / (1e-8 + 0.1 * sigma)).mean()
                                 for oy, ox in offsets])
            alpha[:, y, x] = torch.softmax(kappa, dim=0)
    s = scores.double()
    for _ in range(iterations):
        new = torch.zeros_like(s)
        for y in range(h):
            for x in range(w):
                new[:, y, x] = sum(alpha[k, y, x] * at(s, y + oy, x + ox) for k, (oy, ox) in enumerate(offsets))
        s = new
    return s


def test_pamr_matches_a_pixel_by_pixel_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 7, generator=g) * 255
    scores = torch.rand(2, 6, 7, generator=g)
    dil = (1, 2, 4)
    assert pamr_affinity(image, dil).shape == (24, 6, 7)
    torch.testing.assert_close(pamr(scores, image, 2, dil).double(), direct_pamr(scores, image, 2, dil),
                               atol=1e-5, rtol=1e-5)
    # a flat image gives equal weights: one step is the mean of the 8 neighbours per dilation
    flat = torch.full((3, 5, 5), 7.0)
    assert torch.allclose(pamr_affinity(flat, (1,)), torch.full((8, 5, 5), 1 / 8))
