"""The CLIP multi-label category pre-filter (docs/method.md §6) as plain functions.

Inputs are unit embeddings: the image g [E], the class prompts "a {prompt}" [C, E] of the
thing candidates, and later the subset prompts [S, E]. Nothing here encodes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: At most this many classes go into the subset search (2^10 − 1 = 1023 prompts).
MAX_KEEP = 10


def probabilities(image: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """p_c = softmax over candidates of the raw cosines ⟨g, t_c⟩ (no logit scale): [C] float64."""
    return torch.softmax(texts.double() @ image.double(), dim=0)


def keep(p: torch.Tensor, max_keep: int = MAX_KEEP) -> list[int]:
    """C'': candidates with p ≥ 1/|C| (never empty); above ``max_keep``, the most probable ones by
    descending p (ties: class order), else in class order."""
    c = p.numel()
    # 1e-9 absorbs rounding: equal cosines give p = 1/c up to the last bit.
    kept = [i for i in range(c) if float(p[i]) * c >= 1 - 1e-9]
    if len(kept) > max_keep:
        kept = sorted(kept, key=lambda i: (-float(p[i]), i))[:max_keep]
    return kept


def subsets(n: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of positions 0..n−1, in enumeration order (binary counting: mask
    1, 2, 3, …), each listed in position order."""
    return [tuple(i for i in range(n) if mask >> i & 1) for mask in range(1, 2**n)]


def subset_prompt(prompts: Sequence[str]) -> str:
    """'a dog and a person and a sofa' for ("dog", "person", "sofa")."""
    return " and ".join(f"a {p}" for p in prompts)


def best_subset(scores: torch.Tensor, sets: Sequence[tuple[int, ...]]) -> int:
    """Index of S* = argmax of the subset scores; ties: the smaller subset, then enumeration order."""
    values = scores.double().tolist()
    return min(range(len(sets)), key=lambda k: (-values[k], len(sets[k]), k))


@dataclass(frozen=True)
class Decision:
    """One image's outcome, as indices into the candidate list."""

    p: list[float]
    kept: list[int]
    subset: list[int]
    subset_score: float
