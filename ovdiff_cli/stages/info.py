"""Describe and validate any file or folder ovdiff makes (``ovdiff info``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.images import open_image, png_metadata
from ovdiff_cli.formats.prototypes import BANK, PROTOTYPES, read_bank, read_prototypes
from ovdiff_cli.formats.supportset import (ATTRIBUTION, CROSSATTN, PROPOSALS, SupportSet, read_attribution,
                                          read_crossattn, read_proposals)
from ovdiff_cli.formats.segmentation import SCORES, explain_schema, read_explanation, read_scores
from ovdiff_cli.formats.tensorfile import Schema

EXPLAIN_NAME = "ovdiff.explain"

#: Schema name → (schema, reader that runs every check of the stage that consumes the file).
SCHEMAS: dict[str, tuple[Schema, Callable[[Path], Any]]] = {
    CROSSATTN.name: (CROSSATTN, read_crossattn),
    ATTRIBUTION.name: (ATTRIBUTION, read_attribution),
    PROTOTYPES.name: (PROTOTYPES, read_prototypes),
    BANK.name: (BANK, read_bank),
    PROPOSALS.name: (PROPOSALS, read_proposals),
    SCORES.name: (SCORES, read_scores),
    EXPLAIN_NAME: (explain_schema([]), read_explanation),
}


def _describe_tensors(p: Path) -> dict[str, Any]:
    schema_id = tensorfile.schema_of(p)
    name = schema_id.rpartition("/")[0]
    if name not in SCHEMAS:
        known = ", ".join(s.id for s, _ in SCHEMAS.values())
        raise BadFile(p, f"is not an ovdiff file (schema {schema_id or 'missing'!r}; known: {known})")
    schema, full_check = SCHEMAS[name]
    checked = full_check(p)
    if name == EXPLAIN_NAME:  # its tensors depend on the extractors it covers
        schema = explain_schema(sorted(checked.rows))
    f = tensorfile.read(p, schema, load=False)
    return {"path": str(p), "kind": "tensors", "schema": schema.id, "made_by": schema.made_by,
            "written_by": f"ovdiff {f.writer_version}", "tensors": {k: list(v) for k, v in f.shapes.items()},
            "meta": f.meta}


def _describe_support_set(p: Path) -> dict[str, Any]:
    """Check every file of a support set the way the stages that read them do."""
    s = SupportSet.open(p)
    indices = s.image_indices()
    for i in indices:
        s.read_image(i)
    masks = [i for i in indices if s.mask_path(i).is_file()]
    for i in masks:
        s.read_mask(i)
    out: dict[str, Any] = {"path": str(p), "kind": "support-set", "images": len(indices), "masks": len(masks),
                           "crossattn": s.crossattn_path.is_file(), "attribution": s.attribution_path.is_file(),
                           "meta": s.class_meta()}
    if out["crossattn"]:
        rec = s.read_crossattn()
        if rec.attn.shape[0] != len(indices):
            raise BadFile(s.crossattn_path, f"holds {rec.attn.shape[0]} images, the folder {len(indices)}",
                          CROSSATTN.made_by)
    if out["attribution"]:
        att = s.read_attribution()
        if att.maps.shape[0] != len(indices):
            raise BadFile(s.attribution_path, f"holds {att.maps.shape[0]} maps, the folder {len(indices)} images",
                          ATTRIBUTION.made_by)
    return out


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate ``path`` as the ovdiff file it claims to be and summarise it as a JSON-able dict."""
    p = Path(path)
    if p.is_dir():
        return _describe_support_set(p)
    if not p.exists():
        raise BadFile(p, "does not exist")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return _describe_tensors(p)
    if suffix == ".jsonl":
        return {"path": str(p), "kind": "candidates", "images": len(read_candidates(p))}
    if suffix == ".png":
        im = open_image(p)
        return {"path": str(p), "kind": "image", "mode": im.mode, "size": list(im.size),
                "meta": png_metadata(im, p)}
    raise BadFile(p, f"has an unknown kind ({suffix or 'no suffix'})",
                  fix="give a .safetensors, .png or .jsonl file or a support-set folder")


def describe_all(paths: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    """:func:`describe` each path in turn (stops at the first bad one)."""
    for path in paths:
        yield describe(path)
