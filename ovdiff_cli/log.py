"""Logging and progress, both on stderr so that stdout carries data only.

Verbosity is a process-wide level: ``-q`` → warnings and errors only, no progress; default →
info; ``-v`` → debug, and tracebacks for expected errors. Progress is a tqdm bar on a terminal,
and plain note lines (``ovdiff: note: sample: cat 3/8 batches (12 s)``) at most every
:data:`PLAIN_PROGRESS_INTERVAL_S` seconds when stderr is a file or a pipe (Slurm logs, ``2> log``).

Every line says its level: ``ovdiff: note: …`` (info: nothing to do), ``ovdiff: warning: …``
(something the user can act on, with how), ``ovdiff: error: …`` (cli.py's one-line errors),
``ovdiff: debug: …``. A note that would come once per class, file or image is a
:class:`Repeated`: within a :func:`stage` its occurrences are summed into one line, said when
the stage ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("ovdiff")

_state = {"verbosity": 0}

#: Least seconds between two plain progress lines (stderr not a terminal), over all loops of the
#: process: a line per batch would flood a log when batches take a fraction of a second.
PLAIN_PROGRESS_INTERVAL_S = 5.0
#: When the last plain progress line was printed (``time.monotonic``), None before the first loop.
_plain: dict[str, float | None] = {"last": None}
_clock = time.monotonic  # a test replaces it to check the rate limit without waiting
_PLURALS = {"img": "images", "batch": "batches", "it": "items"}
_said_once: set[tuple[int, str]] = set()  # (level, key) of the once-only messages said so far

#: The word each level is printed with, after ``ovdiff:``.
LEVEL_WORDS = {logging.DEBUG: "debug", logging.INFO: "note", logging.WARNING: "warning", logging.ERROR: "error",
               logging.CRITICAL: "error"}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it per command)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _LevelFormatter(logging.Formatter):
    """``ovdiff: <level>: <message>``; callers never write the level into the message."""

    def format(self, record: logging.LogRecord) -> str:
        record.level_word = LEVEL_WORDS.get(record.levelno, record.levelname.lower())
        return super().format(record)


def set_verbosity(verbosity: int) -> None:
    """Set the level: negative = quiet, 0 = normal, positive = verbose."""
    _state["verbosity"] = verbosity
    _plain["last"] = None  # set as a command starts: its plain progress lines count from its first loop
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_LevelFormatter("ovdiff: %(level_word)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def begin() -> None:
    """Start one invocation afresh: the default level, and every once-only message unsaid again.

    The libraries' own notices are routed too, so every stderr line keeps a level: Python warnings
    (deprecations and the like, nothing a user of ovdiff can act on) become debug lines, shown
    with -v; transformers and diffusers, which log through handlers of their own, keep to errors
    unless the user set their ``*_VERBOSITY`` variables.
    """
    set_verbosity(0)
    _said_once.clear()
    _stages.clear()
    warnings.showwarning = _warning_as_debug
    for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(variable, "error")


def _warning_as_debug(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for a command: the warning as an ``ovdiff: debug:`` line."""
    logger.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def verbosity() -> int:
    """The current verbosity (negative = quiet)."""
    return _state["verbosity"]


def _once(level: int, key: str, message: str) -> None:
    if (level, key) not in _said_once:
        _said_once.add((level, key))
        logger.log(level, "%s", message)


def warn_once(key: str, message: str) -> None:
    """Log a warning the first time ``key`` is seen in this invocation (e.g. a fallback in use)."""
    _once(logging.WARNING, key, message)


def note_once(key: str, message: str) -> None:
    """Log a note the first time ``key`` is seen in this invocation."""
    _once(logging.INFO, key, message)


class Repeated:
    """A note that may come once per class, file or image, e.g. "cat: masks exist, skipped".

    ``summary(items)`` words one line for all the items :func:`repeat` was given during a stage
    (a single item should read as the note itself). Instances are compared by identity: make
    one per kind, at module level.
    """

    def __init__(self, summary: Callable[[list[Any]], str]) -> None:
        self.summary = summary


_stages: list[dict[Repeated, list[Any]]] = []


@contextlib.contextmanager
def stage() -> Iterator[None]:
    """Sum the :class:`Repeated` notes made inside into one line per kind, said at the end.

    Usable as a decorator (``@log.stage()``). Stages nest: each says its own notes when it
    ends. A stage that raises says nothing: its error is the one line the user gets.
    """
    collected: dict[Repeated, list[Any]] = {}
    _stages.append(collected)
    try:
        yield
    finally:
        _stages.pop()  # blocks nest, so the last one is this one
    for kind, items in collected.items():  # in the order each kind was first seen
        logger.info("%s", kind.summary(items))


def repeat(kind: Repeated, item: Any, detail: str | None = None) -> None:
    """One occurrence of ``kind``: summed within a :func:`stage`, said at once outside one.

    ``detail`` (this occurrence in words) is logged at debug level right away, for ``-v``.
    """
    if detail is not None:
        logger.debug("%s", detail)
    if _stages:
        _stages[-1].setdefault(kind, []).append(item)
    else:
        logger.info("%s", kind.summary([item]))


def counted(items: list[Any], one: str, many: str) -> str:
    """``one`` for a single item, else ``many``; both are formatted with n, first and item.

    E.g. ``counted(paths, "{item}: masks exist, skipped", "{n} support sets' masks exist, skipped
    (first: {first})")``.
    """
    return (one if len(items) == 1 else many).format(n=len(items), first=items[0], item=items[0])


def loading_models() -> None:
    """Say ``note: loading models…`` before a command's first slow import (torch and the model
    libraries take seconds, silent otherwise); nothing once torch is imported, as in a test run."""
    if _imports_pending():
        logger.info("loading models…")


def _imports_pending() -> bool:
    """Whether torch, the first and slowest of the model libraries, is still to be imported."""
    return "torch" not in sys.modules


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Yield ``items`` with progress on stderr: a tqdm bar on a terminal, plain rate-limited lines
    otherwise (see :func:`_plain_progress`); nothing when quiet."""
    if verbosity() < 0:
        yield from items
    elif sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False)
    else:
        yield from _plain_progress(items, desc, total, unit)


def _plain_progress(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    """After each item, ``ovdiff: note: <command>: <desc> <done>/<total> <units> (<seconds> s)`` when
    :data:`PLAIN_PROGRESS_INTERVAL_S` has passed since the last such line (or since the first loop
    began), so a log shows a class or batch at most every few seconds and a quick run shows nothing."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = _clock()
    if _plain["last"] is None:
        _plain["last"] = start
    command = _command_name()
    # A loop named after its stage ("sample cat") drops the stage's word under that stage's own
    # command (`ovdiff sample`), and keeps it under `ovdiff run`, where several stages take turns.
    first, _, rest = desc.partition(" ")
    what = (f"{rest} " if rest else "") if command and first == command.split()[-1] else f"{desc} "
    units = _PLURALS.get(unit, f"{unit}s")
    for done, item in enumerate(items, 1):
        yield item
        now = _clock()
        last = _plain["last"]
        if last is None or now - last >= PLAIN_PROGRESS_INTERVAL_S:
            _plain["last"] = now
            of = f"/{total}" if total is not None else ""
            where = f"{command}: " if command else ""  # a note like any other stderr line (docs/design.md §4)
            sys.stderr.write(f"ovdiff: note: {where}{what}{done}{of} {units} ({now - start:.0f} s)\n")
            sys.stderr.flush()


def _command_name() -> str:
    """The running subcommand as typed (``sample``, ``models download``), or '' outside a command."""
    import click

    ctx = click.get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:  # the root's name is the program's, not a command
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))
