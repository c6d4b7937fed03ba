"""Per-image side files of ``ovdiff segment``: score maps and explanation tensors.

- ``<stem>.scores.safetensors`` (``--save-scores``): S̄ [C+1, H0, W0] float32, channel 0 = background.
- ``<stem>.explain.safetensors`` (``--explain``): at the resized size H × W, for every extractor e,
  ``<e>.row`` [H, W] int64 (the bank row that decided the pixel: the fg bank for a class pixel,
  the bg bank for a background pixel; −1 when background won only through the ≤ 0 floor) and
  ``<e>.similarity`` [H, W] float32; ``labels`` [H, W] int64 are the labels at that size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.schemas import SCORES, explain_schema


@dataclass(frozen=True)
class Explanation:
    """labels [H, W]; per extractor (rows [H, W], similarity [H, W]); meta with the banks and sizes."""

    labels: torch.Tensor
    rows: dict[str, torch.Tensor]
    similarity: dict[str, torch.Tensor]
    meta: dict[str, Any]


def write_scores(path: str | os.PathLike[str], scores: torch.Tensor, meta: dict[str, Any]) -> Path:
    return tensorfile.write(path, SCORES, {"scores": scores.float().cpu().contiguous()}, meta)


def read_scores(path: str | os.PathLike[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    f = tensorfile.read(path, SCORES)
    return f.tensors["scores"], f.meta


def write_explanation(path: str | os.PathLike[str], e: Explanation) -> Path:
    names = sorted(e.rows)
    tensors = {"labels": e.labels.long().cpu()}
    for n in names:
        tensors[f"{n}.row"] = e.rows[n].long().cpu()
        tensors[f"{n}.similarity"] = e.similarity[n].float().cpu()
    return tensorfile.write(path, explain_schema(names), tensors, {**e.meta, "extractors": names})


def read_explanation(path: str | os.PathLike[str]) -> Explanation:
    import json

    header, _ = tensorfile.read_header(path, explain_schema([]))
    try:
        names = json.loads(header.get("meta", "{}")).get("extractors")
    except (json.JSONDecodeError, AttributeError):
        names = None
    if not isinstance(names, list):
        raise BadFile(path, "is not a readable explanation file (no extractor list)", "ovdiff segment --explain")
    f = tensorfile.read(path, explain_schema([str(n) for n in names]))
    t = f.tensors
    return Explanation(t["labels"], {n: t[f"{n}.row"] for n in names}, {n: t[f"{n}.similarity"] for n in names},
                       f.meta)
