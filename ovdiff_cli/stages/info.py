"""Describe and validate any file or folder ovdiff makes (``ovdiff info``).

A tensor file is checked from its header (schema, metadata, every tensor's dtype and shape, and
that the file holds all the bytes its header promises) without importing torch, which alone
takes seconds; ``check_values`` also loads the tensors and runs the checks of the stage that
reads the file (finite values, ranges, indices), which needs torch.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import header as tensor_header
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.schemas import ATTRIBUTION, BANK, CROSSATTN, PROPOSALS, PROTOTYPES, SCORES, explain_schema
from ovdiff_cli.formats.header import Schema

EXPLAIN_NAME = "ovdiff.explain"

#: Schema name → (schema, ``module:function`` of the reader that runs every check of the stage that
#: consumes the file). Readers are named, not imported: their modules import torch.
SCHEMAS: dict[str, tuple[Schema, str]] = {
    CROSSATTN.name: (CROSSATTN, "ovdiff_cli.formats.supportset:read_crossattn"),
    ATTRIBUTION.name: (ATTRIBUTION, "ovdiff_cli.formats.supportset:read_attribution"),
    PROTOTYPES.name: (PROTOTYPES, "ovdiff_cli.formats.prototypes:read_prototypes"),
    BANK.name: (BANK, "ovdiff_cli.formats.prototypes:read_bank"),
    PROPOSALS.name: (PROPOSALS, "ovdiff_cli.formats.supportset:read_proposals"),
    SCORES.name: (SCORES, "ovdiff_cli.formats.segmentation:read_scores"),
    EXPLAIN_NAME: (explain_schema([]), "ovdiff_cli.formats.segmentation:read_explanation"),
}


def _reader(target: str) -> Callable[[Path], Any]:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _describe_tensors(p: Path, check_values: bool = False) -> dict[str, Any]:
    head = tensor_header.read_header(p)
    schema_id = head.metadata.get("schema", "")
    name = schema_id.rpartition("/")[0]
    if name not in SCHEMAS:
        known = ", ".join(s.id for s, _ in SCHEMAS.values())
        raise BadFile(p, f"is not an ovdiff file (schema {schema_id or 'missing'!r}; known: {known})")
    schema, full_check = SCHEMAS[name]
    if name == EXPLAIN_NAME:  # its tensors depend on the extractors it covers, named by its '<e>.row' tensors
        schema = explain_schema(sorted(k.removesuffix(".row") for k in head.shapes if k.endswith(".row")))
    tensor_header.check_schema_id(p, schema_id, schema)
    meta = tensor_header.check_meta(p, head.metadata, schema)
    try:
        tensor_header.check_shapes(schema, head.shapes, head.dtypes)
    except ValueError as e:
        raise BadFile(p, str(e), schema.made_by) from None
    if check_values:
        _reader(full_check)(p)
    return {"path": str(p), "kind": "tensors", "schema": schema.id, "made_by": schema.made_by,
            "written_by": f"ovdiff {head.metadata.get('ovdiff', '?')}",
            "tensors": {k: list(v) for k, v in head.shapes.items()}, "meta": meta}


def _describe_support_set(p: Path, check_values: bool = False) -> dict[str, Any]:
    """Check every file of a support set the way the stages that read them do."""
    from ovdiff_cli.formats.supportset import SupportSet  # imports torch, for the set's own tensor readers

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
    # The first dimension of the attention and of the attribution maps counts the set's images.
    for present, path, tensor, what in ((out["crossattn"], s.crossattn_path, "attn", "images"),
                                        (out["attribution"], s.attribution_path, "attribution", "maps")):
        if present:
            n = _describe_tensors(path, check_values)["tensors"][tensor][0]
            if n != len(indices):
                made_by = (CROSSATTN if tensor == "attn" else ATTRIBUTION).made_by
                folder = f"the folder {len(indices)}" + (" images" if what == "maps" else "")
                raise BadFile(path, f"holds {n} {what}, {folder}", made_by)
    return out


def describe(path: str | os.PathLike[str], check_values: bool = False) -> dict[str, Any]:
    """Validate ``path`` as the ovdiff file it claims to be and summarise it as a JSON-able dict.

    ``check_values`` also loads every tensor and checks its values as the stage reading it does.
    """
    p = Path(path)
    if p.is_dir():
        return _describe_support_set(p, check_values)
    if not p.exists():
        raise BadFile(p, "does not exist")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return _describe_tensors(p, check_values)
    if suffix == ".jsonl":
        return {"path": str(p), "kind": "candidates", "images": len(read_candidates(p))}
    if suffix == ".png":
        from ovdiff_cli.formats.images import open_image, png_metadata  # numpy and Pillow: only for images

        im = open_image(p)
        return {"path": str(p), "kind": "image", "mode": im.mode, "size": list(im.size),
                "meta": png_metadata(im, p)}
    raise BadFile(p, f"has an unknown kind ({suffix or 'no suffix'})",
                  fix="give a .safetensors, .png or .jsonl file or a support-set folder")


def describe_all(paths: Iterable[str | os.PathLike[str]], check_values: bool = False) -> Iterator[dict[str, Any]]:
    """:func:`describe` each path in turn (stops at the first bad one)."""
    for path in paths:
        yield describe(path, check_values)
