"""score: per-class IoU and mIoU of label maps against ground truths (docs/method.md §8).

Pairs are matched by file stem. Predictions are told from side files by their PNG metadata, not
their names: a PNG that ovdiff wrote as something else than a label map (an overlay, an explain
picture) is skipped, every other PNG of the folder is a prediction. The vocabulary recorded in
the predictions must be the one scored (names and order), so labels never score under another
class's name. Counts are additive, so ``--shard`` runs can be merged by summing their JSON
outputs (``--merge``).
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
from ovdiff_cli.formats.images import read_png_metadata
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, read_label_map
from ovdiff_cli.formats.provenance import ovdiff_schema
from ovdiff_cli.formats.vocabulary import Vocabulary, builtin
from ovdiff_cli.shard import Shard

MADE_BY = "ovdiff segment"


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
                "pred": self.counts.pred.tolist(), "label": self.counts.label.tolist(),
                **({} if self.counts.confusion is None else {"confusion": self.counts.confusion.tolist()}),
                "warnings": self.warnings}


def _is_picture(path: Path) -> bool:
    """True for a PNG that ovdiff wrote as anything but a label map (overlay, explain picture, …)."""
    schema, _ = ovdiff_schema(path)
    return schema is not None and schema != LABELMAP_SCHEMA


def _list_file(arg: Path) -> list[Path]:
    """The paths a text file lists, one per line, verbatim (only the line end is dropped)."""
    try:
        text = arg.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise BadFile(arg, "is neither a folder, a PNG label map, nor a UTF-8 text file listing label maps",
                      fix="give a folder of label maps, one .png, or a file with one path per line") from None
    return [Path(line.removesuffix("\r")) for line in text.split("\n") if line.strip()]


def _files(arg: Path, what: str, predictions: bool = False) -> dict[str, Path]:
    """stem → label map from a folder, or from a text file listing paths."""
    pictures: list[Path] = []
    if arg.is_dir():
        files = sorted(arg.glob("*.png"))
        if predictions:
            pictures = [p for p in files if _is_picture(p)]
            if pictures:
                log.logger.debug("%d pictures ovdiff made beside the label maps (e.g. %s) are not predictions",
                                 len(pictures), pictures[0].name)
            files = [p for p in files if p not in pictures]
    elif arg.is_file() and arg.suffix.lower() != ".png":
        files = _list_file(arg)
    elif arg.is_file():
        files = [arg]
    else:
        raise BadFile(arg, "does not exist", fix=f"give a folder of {what} label maps or a file listing them")
    if not files:
        only = f", only {len(pictures)} pictures ovdiff made beside label maps" if pictures else ""
        raise BadFile(arg, f"holds no {what} label maps (.png){only}", fix=f"give the folder of the {what} label maps")
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise BadFile(p, f"has the same name as {out[p.stem]}",
                          fix="label maps are matched by name: keep them unique")
        out[p.stem] = p
    return out


def recorded_vocabulary(path: Path) -> Vocabulary | None:
    """The vocabulary a prediction's metadata records (None when it records none)."""
    recorded = read_png_metadata(path, MADE_BY)
    meta = recorded.get("vocabulary")
    if meta is None and recorded.get("schema") != LABELMAP_SCHEMA:
        return None  # a map from elsewhere: --vocab or the dataset says what its labels are
    bad = BadFile(path, "has a malformed 'vocabulary' in its ovdiff metadata (not {name, classes: "
                        "[[name, prompt, kind], …]})", fix="give label maps written by `ovdiff segment`, or "
                                                           "maps without ovdiff metadata and --vocab")
    if not (isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("classes"), list)
            and all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, str) for v in c)
                    for c in meta["classes"])):
        raise bad
    try:
        return Vocabulary.from_meta(meta)
    except BadInput as e:
        raise BadFile(path, f"records a vocabulary that cannot be used ({e.message})", fix=bad.fix) from None


def resolve_vocabulary(vocab: Vocabulary | None, dataset_vocab: str | None, preds: Sequence[Path]) -> Vocabulary:
    """The vocabulary to score: --vocab, else the dataset's, else the one the predictions record;
    whichever it is, every prediction that records a vocabulary must record the same class names
    in the same order (label i means the i-th name)."""
    wanted = vocab if vocab is not None else builtin(dataset_vocab) if dataset_vocab is not None else None
    if vocab is not None and dataset_vocab is not None and vocab.names != builtin(dataset_vocab).names:
        raise BadInput(f"--vocab {_listed(vocab.names)} is not the classes of the dataset ({dataset_vocab}) in "
                       f"their order: {_difference(vocab.names, builtin(dataset_vocab).names, 'the dataset')}",
                       "leave --vocab out with --dataset")
    source = "--vocab" if vocab is not None else f"the dataset ({dataset_vocab})"
    for p in preds:
        recorded = recorded_vocabulary(p)
        if recorded is None:
            continue
        if wanted is None:
            wanted, source = recorded, str(p)
        if recorded.names != wanted.names:
            raise BadFile(p, f"was made with the classes {_listed(recorded.names)}, not {_listed(wanted.names)} "
                             f"of {source}: {_difference(recorded.names, wanted.names, source)}", MADE_BY,
                          fix="score with the vocabulary the maps were made with (order included), or "
                              "segment again with this one")
    if wanted is None:
        raise BadInput("the predictions do not say their vocabulary", "pass --vocab")
    return wanted


def _difference(have: Sequence[str], want: Sequence[str], source: str) -> str:
    """Where two class lists first part: the lists shown are cut short, the difference may lie beyond."""
    for i, (x, y) in enumerate(zip(have, want)):
        if x != y:
            return f"label {i + 1} is {x!r} there, {y!r} in {source}"
    return f"{len(have)} classes there, {len(want)} in {source}"


def _listed(names: Sequence[str], most: int = 6) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return f"[{shown}{', …' if len(names) > most else ''}]"


@log.stage()
def score(pred: Path, gt: Path, *, vocab: Vocabulary | None = None, dataset: str | None = None,
          background: bool = True, strict: bool = False, shard: Shard = Shard()) -> Report:
    """Score every ground truth of ``gt`` (a folder, a list file, or a dataset root with ``dataset``)."""
    preds = _files(pred, "predicted", predictions=True)
    if dataset is not None:
        ds = open_dataset(dataset, gt)
        truths = {i: g for i, _, g in ds.items}
        background = background and ds.background
        protocol = ds.protocol()
    else:
        truths = _files(gt, "ground-truth")
        protocol = {"dataset": None, "ground_truth": str(gt), "ignore_label": 255,
                    "resize": "predictions are compared at the ground truth's size"}
    matched = [s for s in truths if s in preds]
    if not matched:
        raise BadInput(f"none of the {len(preds)} predictions in {pred} has the name of one of the {len(truths)} "
                       f"ground truths (first prediction: {next(iter(preds))}, first ground truth: "
                       f"{next(iter(truths))})", "label maps are matched by file name: give the matching folders")
    vocabulary = resolve_vocabulary(vocab, dataset and ds.vocabulary, [preds[s] for s in matched])
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
            log.logger.warning("%s; they are left out", message)
    pairs = shard.select([(s, preds[s], truths[s]) for s in matched])
    counts, no_class = _count(pairs, k, background=background)
    if no_class:
        warnings["background_predictions"] = no_class
        message = f"{no_class} pixels are predicted background under the no-background protocol"
        if strict:
            raise BadInput(message, "segment with --no-background")
        log.logger.warning("%s; they count as wrong", message)
    if not pairs:
        log.logger.warning("shard %s holds none of the %d matched pairs", shard, len(matched))
    return Report(names, counts, protocol, len(pairs), warnings)


def _count(pairs: Sequence[tuple[str, Path, Path]], k: int, *, background: bool) -> tuple[core.Counts, int]:
    """The confusion counts of (stem, prediction, ground truth) pairs over ``k`` classes, and how many
    pixels were predicted background under the no-background protocol."""
    counts = core.Counts.zeros(k)
    no_class = 0
    for stem, p, g in log.progress(pairs, desc="score", unit="img"):
        y, t = read_label_map(p, MADE_BY), read_label_map(g)
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
    return counts, no_class


def merge(files: Sequence[Path]) -> Report:
    """Sum the counts of ``score --json`` outputs (shards of one split)."""
    reports = []
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
            # "confusion" is optional: files from before it was recorded still merge (and cannot be plotted)
            confusion = np.array(d["confusion"], np.int64) if "confusion" in d else None
            c = core.Counts(np.array(d["intersection"], np.int64), np.array(d["pred"], np.int64),
                            np.array(d["label"], np.int64), confusion)
            k = len(d["classes"])
            if not (isinstance(d["images"], int) and isinstance(d["classes"], list) and isinstance(d["protocol"], dict)
                    and c.intersection.shape == c.pred.shape == c.label.shape == (k,)
                    and (confusion is None or confusion.shape == (k, k + 1))):
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
