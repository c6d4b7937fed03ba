"""score: per-class IoU and mIoU of label maps against ground truths (METHOD.md §8).

Pairs are matched by file stem. Counts are additive, so ``--shard`` runs can be merged by
summing their JSON outputs (``--merge``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovdiff_cli import log
from ovdiff_cli.core import score as core
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats.datasets import open_dataset
from ovdiff_cli.formats.labelmap import read_label_map, read_label_map_meta
from ovdiff_cli.formats.vocabulary import Vocabulary, builtin
from ovdiff_cli.options import Shard

#: Side files `ovdiff segment` writes beside its label maps; never predictions.
SIDE_SUFFIXES = (".overlay.png", ".explain.png")


@dataclass
class Report:
    """Counts and everything needed to print or merge them."""

    names: list[str]
    counts: core.Counts
    protocol: dict[str, Any]
    images: int
    warnings: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        m = core.metrics(self.counts)

        def clean(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"protocol": self.protocol, "images": self.images, "classes": self.names,
                "iou": clean(m["iou"]), "acc": clean(m["acc"]), "mIoU": num(m["mIoU"]), "mAcc": num(m["mAcc"]),
                "aAcc": num(m["aAcc"]), "mIoU_nan_as_zero": num(m["mIoU_nan_as_zero"]),
                "intersection": self.counts.intersection.tolist(), "union": self.counts.union.tolist(),
                "pred": self.counts.pred.tolist(), "label": self.counts.label.tolist(), "warnings": self.warnings}


def _files(arg: Path, what: str) -> dict[str, Path]:
    """stem → label map from a folder, or from a text file listing paths."""
    if arg.is_dir():
        files = [p for p in sorted(arg.glob("*.png")) if not p.name.endswith(SIDE_SUFFIXES)]
    elif arg.is_file() and arg.suffix.lower() != ".png":
        files = [Path(line.strip()) for line in arg.read_text().splitlines() if line.strip()]
    elif arg.is_file():
        files = [arg]
    else:
        raise BadFile(arg, "does not exist", fix=f"give a folder of {what} label maps or a file listing them")
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise BadFile(p, f"has the same name as {out[p.stem]}", fix="label maps are matched by name: keep them unique")
        out[p.stem] = p
    return out


def resolve_vocabulary(vocab: Vocabulary | None, dataset_vocab: str | None, preds: Sequence[Path]) -> Vocabulary:
    if vocab is not None:
        return vocab
    if dataset_vocab is not None:
        return builtin(dataset_vocab)
    for p in preds[:1]:
        meta = read_label_map_meta(p).get("vocabulary")
        if meta:
            return Vocabulary.from_meta(meta)
    raise BadInput("the predictions do not say their vocabulary", "pass --vocab")


def score(pred: Path, gt: Path, vocab: Vocabulary | None = None, dataset: str | None = None,
          background: bool = True, strict: bool = False, shard: Shard = Shard()) -> Report:
    """Score every ground truth of ``gt`` (a folder, a list file, or a dataset root with ``dataset``)."""
    preds = _files(pred, "predicted")
    if dataset is not None:
        ds = open_dataset(dataset, gt)
        truths = {i: g for i, _, g in ds.items}
        background = background and ds.background
        protocol = ds.protocol()
    else:
        truths = _files(gt, "ground-truth")
        protocol = {"dataset": None, "ground_truth": str(gt), "ignore_label": 255,
                    "resize": "predictions are compared at the ground truth's size"}
    vocabulary = resolve_vocabulary(vocab, dataset and ds.vocabulary, list(preds.values()))
    names = (["background"] if background else []) + vocabulary.names
    k = len(names)
    protocol.update({"vocabulary": vocabulary.name, "classes": k,
                     "background": protocol.get("background", "class 0") if background else
                     "ignored: ground-truth 0 becomes 255, labels shift down by one"})
    warnings: dict[str, int] = {}
    missing = [s for s in truths if s not in preds]
    extra = [s for s in preds if s not in truths]
    for key, items, what in (("missing_predictions", missing, "ground truths have no prediction"),
                             ("extra_predictions", extra, "predictions have no ground truth")):
        if items:
            warnings[key] = len(items)
            message = f"{len(items)} {what} (first: {items[0]})"
            if strict:
                raise BadInput(message, "drop --strict to score the pairs that match")
            log.logger.warning("warning: %s; they are left out", message)
    pairs = shard.select([(s, preds[s], truths[s]) for s in truths if s in preds])
    counts = core.Counts.zeros(k)
    no_class = 0
    for stem, p, g in log.progress(pairs, desc="score", unit="img"):
        y, t = read_label_map(p, "ovdiff segment"), read_label_map(g)
        if y.shape != t.shape:
            raise BadFile(p, f"is {y.shape[1]}×{y.shape[0]}, its ground truth {g} {t.shape[1]}×{t.shape[0]}",
                          fix="segment at the original image size (ovdiff segment does)")
        try:
            if not background:
                no_class += int(((y == 0) & (t != 0) & (t != core.IGNORE)).sum())
                y, t = core.no_background(y, t, k)
            counts = counts + core.count(y, t, k, no_class=not background)
        except ValueError as e:
            culprit = g if "ground-truth" in str(e) else p
            raise BadFile(culprit, f"{e} ({stem})", fix="check --vocab and the protocol") from None
    if no_class:
        warnings["background_predictions"] = no_class
        message = f"{no_class} pixels are predicted background under the no-background protocol"
        if strict:
            raise BadInput(message, "segment with --no-background")
        log.logger.warning("warning: %s; they count as wrong", message)
    if not pairs:
        log.logger.warning("warning: no prediction matches a ground truth; every IoU is undefined")
    return Report(names, counts, protocol, len(pairs), warnings)


def merge(files: Sequence[Path]) -> Report:
    """Sum the counts of ``score --json`` outputs (shards of one split)."""
    reports = []
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
            c = core.Counts(np.array(d["intersection"], np.int64), np.array(d["pred"], np.int64),
                            np.array(d["label"], np.int64))
            if not (isinstance(d["images"], int) and isinstance(d["classes"], list) and isinstance(d["protocol"], dict)
                    and c.intersection.shape == c.pred.shape == c.label.shape == (len(d["classes"]),)):
                raise ValueError("inconsistent fields")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadFile(f, f"is not the JSON of `ovdiff score --json` ({type(e).__name__})",
                          fix="give files written by `ovdiff score --json`") from None
        reports.append((f, d, c))
    first_file, first, total = reports[0]
    images, warnings = first["images"], dict(first.get("warnings", {}))
    for f, d, c in reports[1:]:
        if d["classes"] != first["classes"]:
            raise BadFile(f, f"scores other classes than {first_file}", fix="merge shards of one run")
        total = total + c
        images += d["images"]
        for k, v in d.get("warnings", {}).items():
            warnings[k] = warnings.get(k, 0) + v
    return Report(first["classes"], total, {**first["protocol"], "merged": len(reports)}, images, warnings)


def table(report: Report) -> Any:
    """A rich table: class, IoU, accuracy and ground-truth pixels; "–" for an undefined IoU."""
    from rich.table import Table

    m = core.metrics(report.counts)
    n = report.images
    t = Table(title=f"{report.protocol.get('dataset') or 'ovdiff score'}: {n} image{'' if n == 1 else 's'}",
              caption=f"mIoU {_pct(m['mIoU'])}   mAcc {_pct(m['mAcc'])}   aAcc {_pct(m['aAcc'])}")
    for col, just in (("class", "left"), ("IoU", "right"), ("Acc", "right"), ("pixels", "right")):
        t.add_column(col, justify=just)
    for name, iou, acc, n in zip(report.names, m["iou"], m["acc"], report.counts.label):
        t.add_row(name, _pct(iou), _pct(acc), f"{int(n):,}")
    return t


def _pct(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:.1f}"
