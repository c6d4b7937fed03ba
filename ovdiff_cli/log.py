"""Logging and progress bars, both on stderr so that stdout carries data only.

Verbosity is a process-wide level: ``-q`` → warnings and errors only, no progress bars;
default → info; ``-v`` → debug, and tracebacks for expected errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger("ovdiff")

_state = {"verbosity": 0}
_warned_once: set[str] = set()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it per command)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def set_verbosity(verbosity: int) -> None:
    """Set the level: negative = quiet, 0 = normal, positive = verbose."""
    _state["verbosity"] = verbosity
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("ovdiff: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def verbosity() -> int:
    """The current verbosity (negative = quiet)."""
    return _state["verbosity"]


def warn_once(key: str, message: str) -> None:
    """Log a warning the first time ``key`` is seen in this process (e.g. a fallback in use)."""
    if key not in _warned_once:
        _warned_once.add(key)
        logger.warning("warning: %s", message)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr; silent when quiet or stderr is not a terminal."""
    from tqdm import tqdm

    quiet = verbosity() < 0 or not sys.stderr.isatty()
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=quiet, file=sys.stderr, leave=False)
