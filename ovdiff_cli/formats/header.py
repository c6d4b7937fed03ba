"""What a tensor file claims, read and checked from its header alone, without torch.

A safetensors file is an 8-byte little-endian header length, a JSON header (per tensor its
dtype, shape and byte range; ``__metadata__`` with string values) and the tensor bytes. Reading
that is all ``ovdiff info`` needs to show a file and check its structure, and importing torch
for it would cost seconds. :mod:`ovdiff_cli.formats.tensorfile` shares the schema checks here,
so both readers word their errors the same way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile

Dim = int | str

#: safetensors' dtype codes → the names schemas use, and the bytes of one element.
SAFE_DTYPES: dict[str, str] = {"F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "U8": "uint8",
                               "BOOL": "bool", "BF16": "bfloat16", "F64": "float64"}
_ITEM_BYTES: dict[str, int] = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                               "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

#: A header longer than this is not one ovdiff wrote (a quick start's largest, a cross-attention
#: file's, holds 2.4 kB); the bound keeps a corrupt length from making us read a whole file as JSON.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorSpec:
    """Expected dtype and shape; a ``str`` dimension is a symbol bound on first use."""

    dtype: str
    shape: tuple[Dim, ...]
    optional: bool = False


@dataclass(frozen=True)
class Schema:
    """One kind of file: its name, version, the command that writes it, and its tensors."""

    name: str
    version: int
    made_by: str
    tensors: Mapping[str, TensorSpec] = field(default_factory=dict)
    #: Metadata every file of this kind must carry (provenance: class, models, inputs, …).
    meta_keys: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Header:
    """A safetensors file's header: its string metadata, and per tensor the dtype name and shape."""

    metadata: dict[str, str]
    dtypes: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def check_shapes(schema: Schema, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str]) -> dict[str, int]:
    """Check names, dtypes and shapes; return the bound symbols. Raise ValueError(message)."""
    dims: dict[str, int] = {}
    unknown = sorted(set(shapes) - set(schema.tensors))
    if unknown:
        raise ValueError(f"has unexpected tensor(s) {', '.join(unknown)} for {schema.id}")
    for name, spec in schema.tensors.items():
        if name not in shapes:
            if spec.optional:
                continue
            raise ValueError(f"lacks the tensor '{name}' that {schema.id} requires")
        if dtypes[name] != spec.dtype:
            raise ValueError(f"tensor '{name}' is {dtypes[name]}, expected {spec.dtype}")
        shape = shapes[name]
        if len(shape) != len(spec.shape):
            raise ValueError(f"tensor '{name}' has shape {list(shape)}, expected {len(spec.shape)} dimensions "
                             f"{list(spec.shape)}")
        for size, want in zip(shape, spec.shape):
            if isinstance(want, int):
                if size != want:
                    raise ValueError(f"tensor '{name}' has shape {list(shape)}, expected {list(spec.shape)}")
            elif dims.setdefault(want, size) != size:
                raise ValueError(f"tensor '{name}' has {want}={size} but another tensor has {want}={dims[want]}")
    return dims


def check_schema_id(p: Path, found: str | None, schema: Schema) -> None:
    """Check that a file's ``schema`` entry names ``schema`` at a version this ovdiff reads."""
    if not found:
        raise BadFile(p, f"is not an ovdiff file (no schema in its metadata), expected {schema.id}", schema.made_by)
    name, _, version = found.rpartition("/")
    if name != schema.name:
        raise BadFile(p, f"is a {found} file, expected {schema.id}", schema.made_by)
    if not version.isdigit() or int(version) > schema.version:
        raise BadFile(p, f"has schema {found}, newer than this ovdiff reads ({schema.id})",
                      fix="upgrade ovdiff-cli or remake the file with this version")
    if int(version) < schema.version:
        raise BadFile(p, f"has the old schema {found}, this ovdiff reads {schema.id}", schema.made_by)


def check_meta(p: Path, metadata: Mapping[str, str], schema: Schema) -> dict[str, Any]:
    """The ``meta`` JSON object of a file of ``schema``, checked for the keys the schema requires."""
    try:
        meta = json.loads(metadata.get("meta", "{}"))
    except json.JSONDecodeError:
        raise BadFile(p, "has unreadable metadata (invalid JSON)", schema.made_by) from None
    if not isinstance(meta, dict):
        raise BadFile(p, "has unreadable metadata (not a JSON object)", schema.made_by)
    lacking = [k for k in schema.meta_keys if k not in meta]
    if lacking:
        raise BadFile(p, f"lacks the metadata {', '.join(lacking)} that {schema.id} requires", schema.made_by)
    return meta


def read_header(path: str | os.PathLike[str], made_by: str | None = None) -> Header:
    """Parse and check the header of the safetensors file at ``path`` (its tensor bytes are not read).

    Checks what safetensors checks when it opens a file: the header is a JSON object, every
    tensor has a known dtype, a shape and a byte range of exactly its size, the ranges tile the
    data, and the file holds all of it (a cut-off file is reported as truncated).
    """
    p = Path(path)
    if not p.is_file():
        raise BadFile(p, "does not exist" if not p.exists() else "is not a file", made_by)

    def bad(problem: str) -> BadFile:
        return BadFile(p, f"is not a readable safetensors file ({problem}); it may be truncated", made_by)

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise bad(f"header length {n} does not fit in the file's {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("its metadata is not a map of strings")
    dtypes: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        try:
            code, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if code not in _ITEM_BYTES or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError
            if not (isinstance(start, int) and isinstance(end, int)):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise bad(f"tensor '{name}' has no valid dtype, shape and data offsets") from None
        if end - start != math.prod(shape) * _ITEM_BYTES[code]:
            raise bad(f"tensor '{name}' spans {end - start} bytes, its shape and dtype need "
                      f"{math.prod(shape) * _ITEM_BYTES[code]}")
        dtypes[name] = SAFE_DTYPES.get(code, code.lower())
        shapes[name] = shape
        ranges.append((start, end, name))
    expected = 0
    for start, end, name in sorted(ranges):
        if start != expected:
            raise bad(f"tensor '{name}' starts at byte {start}, expected {expected}")
        expected = end
    held = size - 8 - n
    if held != expected:
        problem = "is truncated" if held < expected else "has trailing bytes"
        raise BadFile(p, f"{problem}: its header promises {expected} bytes of tensor data, it holds {held}", made_by)
    return Header(metadata, dtypes, shapes)
