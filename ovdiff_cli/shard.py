"""Shards: the K-th of N near-equal contiguous parts of a list of work (``--shard K/N``).

Shared by every layer, like :mod:`ovdiff_cli.errors`: the stages split their work with it, and
:mod:`ovdiff_cli.options` parses it from the command line or a Slurm job array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ovdiff_cli.errors import BadInput

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (1-based) of ``count`` near-equal contiguous parts of a list of work."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise BadInput(f"shard {self.index}/{self.count} is out of range", "use K/N with 1 <= K <= N")

    def select(self, items: Sequence[T]) -> list[T]:
        """This shard's part of ``items``; the parts of all shards partition ``items`` in order."""
        n = len(items)
        start = (self.index - 1) * n // self.count
        stop = self.index * n // self.count
        return list(items[start:stop])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
