"""The stuff filter (docs/method.md §5) on hand-made prototypes."""

from __future__ import annotations

import math

import pytest
import torch

from ovdiff_cli.core.bank import Rows, class_rows, cosine, l2_normalise, normalised, stuff_filter
from ovdiff_cli.core.settings import BankSettings


def unit(angle_cos: float, scale: float = 1.0) -> torch.Tensor:
    """A 2-d vector at the angle whose cosine with (1, 0) is ``angle_cos``."""
    return scale * torch.tensor([angle_cos, math.sqrt(1 - angle_cos**2)])


def rows(vectors: list[torch.Tensor], owner: int, kind: int = 1) -> Rows:
    m = len(vectors)
    return Rows(torch.stack(vectors), torch.full((m,), owner), torch.full((m,), kind), torch.arange(m))


# label 1 = cat (thing), label 2 = sky (stuff) whose fg prototype is (1, 0)
FG = Rows.cat([rows([unit(0.0)], 1), rows([torch.tensor([3.0, 0.0])], 2)], 2)
BG = Rows.cat([rows([unit(0.86, 2.0), unit(0.84, 5.0), unit(0.2)], 1), rows([unit(0.1)], 2)], 2)


def test_a_things_bg_prototype_just_above_the_threshold_goes_just_below_stays() -> None:
    out = stuff_filter(FG, BG, stuff_labels={2})
    # cat's rows at cosine 0.86 (> 0.85) go; 0.84 and 0.2 stay (scale does not matter)
    assert out.bg.owner.tolist() == [1, 1] and out.bg.index.tolist() == [1, 2]
    reasons = {(d["owner"], d["index"]): d for d in out.dropped}
    assert reasons[(1, 0)]["cosine"] == pytest.approx(0.86, abs=1e-6)
    assert reasons[(1, 0)]["against"] == {"owner": 2, "kind": 1, "index": 0}
    # the stuff class keeps no background at all
    assert reasons[(2, 0)]["reason"].startswith("stuff class")
    assert len(out.dropped) == 2


def test_the_threshold_is_a_setting() -> None:
    assert stuff_filter(FG, BG, {2}, BankSettings(threshold=0.87)).bg.index.tolist() == [0, 1, 2]
    assert stuff_filter(FG, BG, {2}, BankSettings(threshold=0.5)).bg.index.tolist() == [2]
    assert stuff_filter(FG, BG, {2}, BankSettings(threshold=0.1)).bg.index.tolist() == []


def test_without_stuff_classes_or_with_the_filter_off_nothing_goes() -> None:
    assert len(stuff_filter(FG, BG, set()).bg) == 4
    out = stuff_filter(FG, BG, {2}, BankSettings(stuff_filter=False))
    assert len(out.bg) == 4 and out.dropped == []


def test_compare_all_checks_other_classes_fg_and_keeps_stuff_bg() -> None:
    # sky's bg (cos 0.1 with its own fg (1,0)) vs cat's fg (0, 1): cos = sqrt(1 - 0.01) = 0.995 > 0.85 → goes
    out = stuff_filter(FG, BG, {2}, BankSettings(compare="all"))
    assert [(d["owner"], d["index"]) for d in out.dropped] == [(1, 0), (2, 0)]
    assert out.dropped[1]["against"]["owner"] == 1


def test_cosine_and_normalisation_clamp_tiny_norms() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(l2_normalise(a), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    assert torch.allclose(cosine(a, torch.tensor([[1.0, 0.0]])), torch.tensor([[0.6], [0.0]]))
    n = normalised(rows([torch.tensor([0.0, 2.0])], 1))
    assert torch.allclose(n.vectors, torch.tensor([[0.0, 1.0]]))


def test_class_rows_keep_the_chosen_kinds_in_order() -> None:
    by_kind = {"class": torch.ones(1, 2), "instance": torch.zeros(3, 2), "part": torch.full((2, 2), 2.0)}
    r = class_rows(4, by_kind, ("class", "instance", "part"))
    assert r.kind.tolist() == [0, 1, 1, 1, 2, 2] and r.index.tolist() == [0, 0, 1, 2, 0, 1]
    assert r.owner.tolist() == [4] * 6
    assert class_rows(4, by_kind, ("part",)).kind.tolist() == [2, 2]
    assert len(class_rows(4, by_kind, ())) == 0
