"""Describe and validate any file or folder ovdiff makes (``ovdiff info``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.images import open_image, png_metadata
from ovdiff_cli.formats.prototypes import BANK, PROTOTYPES, read_bank, read_prototypes
from ovdiff_cli.formats.supportset import ATTRIBUTION, CROSSATTN, SupportSet, read_attribution, read_crossattn
from ovdiff_cli.formats.tensorfile import Schema


#: Schema name → (schema, reader that runs every check of the stage that consumes the file).
SCHEMAS: dict[str, tuple[Schema, Callable[[Path], Any]]] = {
    CROSSATTN.name: (CROSSATTN, read_crossattn),
    ATTRIBUTION.name: (ATTRIBUTION, read_attribution),
    PROTOTYPES.name: (PROTOTYPES, read_prototypes),
    BANK.name: (BANK, read_bank),
}


def _describe_tensors(p: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            schema_id = (f.metadata() or {}).get("schema", "")
    except Exception:
        raise BadFile(p, "is not a readable safetensors file; it may be truncated") from None
    name = schema_id.rpartition("/")[0]
    if name not in SCHEMAS:
        known = ", ".join(s.id for s, _ in SCHEMAS.values())
        raise BadFile(p, f"is not an ovdiff file (schema {schema_id or 'missing'!r}; known: {known})")
    schema, full_check = SCHEMAS[name]
    full_check(p)
    f = tensorfile.read(p, schema, load=False)
    return {"path": str(p), "kind": "tensors", "schema": schema.id, "made_by": schema.made_by,
            "written_by": f"ovdiff {f.writer_version}", "tensors": {k: list(v) for k, v in f.shapes.items()},
            "meta": f.meta}


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate ``path`` as the ovdiff file it claims to be and summarise it as a JSON-able dict."""
    p = Path(path)
    if p.is_dir():
        s = SupportSet.open(p)
        return {"path": str(p), "kind": "support-set", "images": len(s.image_indices()),
                "crossattn": s.crossattn_path.is_file(), "attribution": s.attribution_path.is_file(),
                "masks": len(list(s.masks_dir.glob("[0-9]*.png"))) if s.masks_dir.is_dir() else 0,
                "meta": s.class_meta()}
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
