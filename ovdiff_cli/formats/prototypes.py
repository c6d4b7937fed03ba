"""Prototype files (``<out>/<slug>.<extractor>.safetensors``) and banks (``<out>/bank.<extractor>.safetensors``).

A prototype file holds one class's foreground and background prototypes for one extractor
(docs/method.md §4.2), raw (not normalised), with the provenance ``explain`` needs. A bank holds every
class of one vocabulary for one extractor after the stuff filter (§5), rows L2-normalised, each
with its owner class (label 1..|C|), kind and index.

Kinds are stored as integers: 0 = class, 1 = instance, 2 = part.

The records read and written are core's: :class:`~ovdiff_cli.core.prototypes.Prototypes` (with
its two :class:`~ovdiff_cli.core.prototypes.Side`) and the rows of a bank,
:class:`~ovdiff_cli.core.bank.Rows`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli.core.bank import Rows
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.provenance import safe_name
from ovdiff_cli.formats.schemas import BANK, PROTOTYPES
from ovdiff_cli.formats.vocabulary import Vocabulary

KINDS = ("class", "instance", "part")
SIDES = ("fg", "bg")


def prototype_path(folder: str | os.PathLike[str], slug: str, extractor: str) -> Path:
    return Path(folder) / f"{slug}.{extractor}.safetensors"


def bank_path(folder: str | os.PathLike[str], extractor: str) -> Path:
    return Path(folder) / f"bank.{extractor}.safetensors"


def _side_problems(side: str, p: Side) -> list[str]:
    problems = []
    for name, t in (("class", p.class_proto), ("instance", p.instance), ("part", p.part)):
        if t.numel() and not torch.isfinite(t).all():
            problems.append(f"non-finite {side} {name} prototypes")
    if p.class_proto.shape[0] > 1:
        problems.append(f"{p.class_proto.shape[0]} {side} class prototypes (at most 1)")
    k = p.part.shape[0]
    if p.pooled_label.numel() and (k == 0 or p.pooled_label.min() < 0 or p.pooled_label.max() >= k):
        problems.append(f"{side} cluster labels outside 0..{k - 1}")
    if p.instance_image.numel() and p.instance_image.min() < 0:
        problems.append(f"negative {side} instance image ids")
    return problems


def _prototypes_problems(fg: Side, bg: Side) -> list[str]:
    """What makes a class's sides unfit for a prototype file (the writer refuses them, the reader
    rejects the file): the checks of each side, and the one foreground class prototype."""
    problems = _side_problems("fg", fg) + _side_problems("bg", bg)
    if fg.class_proto.shape[0] != 1:
        problems.append("no foreground class prototype")
    return problems


def write_prototypes(path: str | os.PathLike[str], protos: Prototypes) -> Path:
    """Write a prototype file atomically (``meta`` must hold ``class`` and ``extractor``)."""
    problems = _prototypes_problems(protos.fg, protos.bg)
    if problems:
        raise ValueError(f"refusing to write {path}: " + "; ".join(problems))
    tensors: dict[str, torch.Tensor] = {}
    for side in SIDES:
        p: Side = getattr(protos, side)
        tensors.update({f"{side}.class": p.class_proto, f"{side}.instance": p.instance,
                        f"{side}.instance_image": p.instance_image, f"{side}.part": p.part,
                        f"{side}.pooled_index": p.pooled_index, f"{side}.pooled_label": p.pooled_label})
    return tensorfile.write(path, PROTOTYPES, tensors, protos.meta)


def read_prototypes(path: str | os.PathLike[str]) -> Prototypes:
    """Read and check a prototype file."""
    f = tensorfile.read(path, PROTOTYPES)
    t = f.tensors
    sides = {side: Side(t[f"{side}.class"], t[f"{side}.instance"], t[f"{side}.instance_image"],
                        t[f"{side}.part"], t[f"{side}.pooled_index"], t[f"{side}.pooled_label"])
             for side in SIDES}
    problems = _prototypes_problems(sides["fg"], sides["bg"])
    if problems:
        raise BadFile(f.path, "has " + "; ".join(problems), PROTOTYPES.made_by)
    _check_names(f.path, f.meta, PROTOTYPES.made_by)
    if not isinstance(f.meta["class"], str) or not f.meta["class"].strip():
        raise BadFile(f.path, "has no class name in its metadata ('class' is not text)", PROTOTYPES.made_by)
    return Prototypes(sides["fg"], sides["bg"], f.meta)


def _check_names(path: Path, meta: dict[str, Any], made_by: str) -> None:
    """The metadata that becomes part of a file name (the extractor: ``bank.<extractor>.safetensors``)
    must be a name ovdiff gives: a file that says ``x/../../OUTSIDE`` is refused, not followed."""
    safe_name(meta["extractor"], path, "extractor", made_by)


@dataclass(frozen=True)
class Bank:
    """All classes of one vocabulary for one extractor. ``meta`` holds the extractor settings,
    the filter settings and what was dropped; ``vocabulary`` is stored in it too.

    fg and bg rows are L2-normalised, each owned by a label 1..|C|. (The bank lives here, not in
    core, because it carries a :class:`Vocabulary`.)
    """

    fg: Rows
    bg: Rows
    vocabulary: Vocabulary
    meta: dict[str, Any]

    @property
    def extractor(self) -> str:
        return str(self.meta["extractor"])


def _bank_problems(side: str, b: Rows, n_classes: int) -> list[str]:
    problems = []
    if b.vectors.numel():
        if not torch.isfinite(b.vectors).all():
            problems.append(f"non-finite {side} vectors")
        elif (b.vectors.norm(dim=1) - 1).abs().max() > 1e-3:
            problems.append(f"{side} vectors that are not L2-normalised")
    if b.owner.numel() and (b.owner.min() < 1 or b.owner.max() > n_classes):
        problems.append(f"{side} owners outside the vocabulary's labels 1..{n_classes}")
    if b.kind.numel() and (b.kind.min() < 0 or b.kind.max() >= len(KINDS)):
        problems.append(f"{side} kinds outside 0..{len(KINDS) - 1}")
    return problems


def write_bank(path: str | os.PathLike[str], bank: Bank) -> Path:
    """Write a bank atomically; the vocabulary goes into the metadata."""
    n = len(bank.vocabulary)
    problems = _bank_problems("fg", bank.fg, n) + _bank_problems("bg", bank.bg, n)
    if problems:
        raise ValueError(f"refusing to write {path}: " + "; ".join(problems))
    tensors: dict[str, torch.Tensor] = {}
    for side in SIDES:
        b: Rows = getattr(bank, side)
        tensors.update({side: b.vectors, f"{side}_owner": b.owner, f"{side}_kind": b.kind, f"{side}_index": b.index})
    return tensorfile.write(path, BANK, tensors, {**bank.meta, "vocabulary": bank.vocabulary.to_meta()})


def read_bank(path: str | os.PathLike[str]) -> Bank:
    """Read and check a bank."""
    f = tensorfile.read(path, BANK)
    _check_names(f.path, f.meta, BANK.made_by)
    meta = dict(f.meta)
    try:
        vocabulary = Vocabulary.from_meta(meta.pop("vocabulary"))
    except Exception:
        raise BadFile(f.path, "has no readable vocabulary in its metadata", BANK.made_by) from None
    t = f.tensors
    sides = {s: Rows(t[s], t[f"{s}_owner"], t[f"{s}_kind"], t[f"{s}_index"]) for s in SIDES}
    problems = _bank_problems("fg", sides["fg"], len(vocabulary)) + _bank_problems("bg", sides["bg"], len(vocabulary))
    if problems:
        raise BadFile(f.path, "has " + "; ".join(problems), BANK.made_by)
    return Bank(sides["fg"], sides["bg"], vocabulary, meta)
