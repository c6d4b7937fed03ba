"""Candidates JSON Lines (``ovdiff classify`` → ``ovdiff segment --candidates``).

One JSON object per line, per image::

    {"image": "photos/cat.jpg", "vocabulary": "voc",
     "scores": {"cat": 0.31, "dog": 0.12, ...},   # softmax p_c over the thing candidates
     "kept": ["cat", "dog"],                       # C'' (p_c >= 1/|C_cand|, at most 10)
     "subset": ["cat"], "subset_score": 0.29,      # S* and its text-image cosine
     "active": ["cat", "sky"],                     # S* ∪ Stuff(C): the classes segment may use
     "schema": "ovdiff.candidates/1",              # written by `ovdiff classify`, with its provenance:
     "settings": {...}, "inputs": {"image_sha256": "..."}}

Readers accept records without ``schema``, ``settings`` and ``inputs`` (a hand-made file is a
valid input to `ovdiff segment --candidates`), but only a file whose every record carries the
schema is one that ovdiff made, and so one that `ovdiff classify` may replace.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.atomic import write_text
from ovdiff_cli.formats.provenance import check_replaceable

MADE_BY = "ovdiff classify"

#: The ``schema`` entry of every record `ovdiff classify` writes.
CANDIDATES_SCHEMA = "ovdiff.candidates/1"


@dataclass(frozen=True)
class Candidates:
    """The CLIP pre-filter's decision for one image (docs/method.md §6)."""

    image: str
    scores: dict[str, float]
    kept: list[str]
    subset: list[str]
    subset_score: float
    active: list[str]
    vocabulary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        obj = {k: v for k, v in asdict(self).items() if k != "extra"}
        obj.update(self.extra)
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_candidates(path: str | os.PathLike[str], records: Iterable[Candidates]) -> Path:
    """Write all records as JSON Lines atomically."""
    write_text(path, "".join(r.to_json() + "\n" for r in records))
    return Path(path)


def _parse(obj: Any, where: str, path: Path) -> Candidates:
    if not isinstance(obj, dict):
        raise BadFile(path, f"{where} is not a JSON object", MADE_BY)

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in obj:
            raise BadFile(path, f"{where} lacks '{key}'", MADE_BY)
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
            raise BadFile(path, f"{where}: '{key}' has the wrong type", MADE_BY)
        return obj[key]

    image = need("image", str)
    scores = need("scores", dict)
    lists = {k: need(k, list) for k in ("kept", "subset", "active")}
    subset_score = need("subset_score", (int, float))
    if not math.isfinite(subset_score):
        raise BadFile(path, f"{where}: 'subset_score' is not a finite number", MADE_BY)
    for k, v in scores.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise BadFile(path, f"{where}: score of {k!r} is not a finite number", MADE_BY)
    for k, v in lists.items():
        if not all(isinstance(x, str) for x in v):
            raise BadFile(path, f"{where}: '{k}' must list class names", MADE_BY)
    known = set(Candidates.__dataclass_fields__)
    extra = {k: v for k, v in obj.items() if k not in known}
    return Candidates(image, {k: float(v) for k, v in scores.items()}, lists["kept"], lists["subset"],
                      float(subset_score), lists["active"], str(obj.get("vocabulary", "")), extra)


def read_candidates(path: str | os.PathLike[str]) -> list[Candidates]:
    """Read and check every line; blank lines are skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadFile(p, "does not exist", MADE_BY) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadFile(p, f"is not readable UTF-8 text ({e})", MADE_BY) from None
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):  # JSON Lines breaks at \n only
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadFile(p, f"line {lineno} is not valid JSON ({e.msg}); it may be truncated", MADE_BY) from None
        out.append(_parse(obj, f"line {lineno}", p))
    return out


def read_own_candidates(path: str | os.PathLike[str]) -> list[Candidates] | None:
    """The records of the candidates file ovdiff made at ``path``; None when nothing is there.

    Raises :class:`BadFile` for a folder or for any file that is not, record by record, one that
    `ovdiff classify` wrote: such a file is never replaced, not even with ``--overwrite``.
    """
    if check_replaceable(path, CANDIDATES_SCHEMA, "classify") is None:
        return None
    return read_candidates(path)
