"""The CLIP pre-filter's rules (docs/method.md §6) with hand-set numbers."""

from __future__ import annotations

import math

import pytest
import torch

from ovdiff_cli.core import clipfilter as cf


def test_probabilities_are_a_softmax_of_raw_cosines() -> None:
    g = torch.tensor([1.0, 0.0])
    t = torch.tensor([[0.3, 0.0], [0.1, 0.0]])
    p = cf.probabilities(g, t)
    e3, e1 = math.exp(0.3), math.exp(0.1)
    assert p.tolist() == pytest.approx([e3 / (e3 + e1), e1 / (e3 + e1)])  # no logit scale


def test_keep_at_least_one_over_c_in_class_order() -> None:
    assert cf.keep(torch.tensor([0.2, 0.5, 0.3])) == [1]           # 1/3: only 0.5
    assert cf.keep(torch.tensor([0.3, 0.2, 0.25, 0.25])) == [0, 2, 3]  # ≥ 0.25 kept, equality included
    assert cf.keep(torch.softmax(torch.zeros(3, dtype=torch.float64), 0)) == [0, 1, 2]  # all exactly 1/3


def test_the_cap_keeps_the_most_probable_in_descending_order() -> None:
    # 12 classes: class i (1..11) has p = 1/12 + i·1e-4, class 0 the rest (below 1/12)
    p = torch.tensor([0.0] + [1 / 12 + 1e-4 * i for i in range(1, 12)], dtype=torch.float64)
    p[0] = 1 - p[1:].sum()
    assert cf.keep(p, 12) == list(range(1, 12))  # 11 kept, class order
    assert cf.keep(p, 10) == list(range(11, 1, -1))  # capped: the 10 largest by descending p
    equal = torch.full((12,), 1 / 12, dtype=torch.float64)
    assert cf.keep(equal, 10) == list(range(10))  # ties: class order


def test_subsets_in_enumeration_order() -> None:
    assert cf.subsets(3) == [(0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]
    assert len(cf.subsets(10)) == 1023


def test_subset_prompt() -> None:
    assert cf.subset_prompt(["dog", "person", "sofa"]) == "a dog and a person and a sofa"
    assert cf.subset_prompt(["potted plant"]) == "a potted plant"


def test_best_subset_ties_go_to_the_smaller_then_the_earlier() -> None:
    sets = cf.subsets(2)  # (0,), (1,), (0, 1)
    assert cf.best_subset(torch.tensor([0.2, 0.3, 0.25]), sets) == 1
    assert cf.best_subset(torch.tensor([0.3, 0.2, 0.3]), sets) == 0   # {0} beats {0, 1} at equal score
    assert cf.best_subset(torch.tensor([0.3, 0.3, 0.1]), sets) == 0   # same size: enumeration order
