"""Self-describing safetensors files: a schema name and version, JSON metadata, checked tensors.

Every tensor file ovdiff writes carries in its safetensors metadata:

- ``schema``: ``<name>/<version>``, e.g. ``ovdiff.prototypes/1``;
- ``ovdiff``: the version of ovdiff that wrote it;
- ``meta``: a JSON object (sorted keys, so equal inputs give equal bytes) with the class or
  vocabulary, the models, every parameter that shaped the file and hashes of its inputs.

:func:`read` checks the schema, every tensor's presence, dtype and shape (symbolic dimensions
such as ``"N"`` must agree across tensors) and turns every problem into a one-line
:class:`~ovdiff_cli.errors.BadFile` that names the command making the right file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli import __version__
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.atomic import atomic_open
# Schema, TensorSpec and Dim live in the torch-free header module (``ovdiff info`` reads headers
# without torch); they are re-exported here, where the stages have always imported them from.
from ovdiff_cli.formats.header import SAFE_DTYPES as _SAFE_DTYPES
from ovdiff_cli.formats.header import Dim, Schema, TensorSpec, check_meta, check_schema_id
from ovdiff_cli.formats.header import check_shapes as _check_shapes

__all__ = ["Dim", "Schema", "TensorSpec", "TensorFile", "read", "read_header", "schema_of", "write"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


@dataclass(frozen=True)
class TensorFile:
    """What :func:`read` returns: the tensors, the JSON metadata and the bound dimensions."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    dims: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    writer_version: str


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def write(path: str | os.PathLike[str], schema: Schema, tensors: Mapping[str, torch.Tensor],
          meta: Mapping[str, Any]) -> Path:
    """Validate and write ``tensors`` with ``meta`` atomically; return the path.

    A mismatch with the schema here is a bug in the caller, hence ``ValueError``.
    """
    from safetensors.torch import save

    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    dtypes = {k: _dtype_name(v.dtype) for k, v in tensors.items()}
    try:
        _check_shapes(schema, shapes, dtypes)
    except ValueError as e:
        raise ValueError(f"refusing to write {path}: {e}") from None
    lacking = [k for k in schema.meta_keys if k not in meta]
    if lacking:
        raise ValueError(f"refusing to write {path}: metadata lacks {', '.join(lacking)}")
    header = {
        "schema": schema.id,
        "ovdiff": __version__,
        "meta": json.dumps(dict(meta), sort_keys=True, ensure_ascii=False, allow_nan=False),
    }
    cpu = _own_storage({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    # Serialised in memory and written by us: safetensors' own file writer leaves a temporary
    # file of its own (mode 0600, a name we cannot sweep) when the process is killed.
    data = _sorted_header(save(cpu, metadata=header))
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def _sorted_header(data: bytes) -> bytes:
    """A safetensors file's bytes with its header's keys sorted.

    safetensors writes its header maps in hash order, which varies between processes; sorting
    makes equal inputs give equal bytes. The sorted compact JSON is never longer than the
    original, so it is padded with spaces (which the format allows) to the same length and the
    tensor data is not touched.
    """
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen with safetensors' compact JSON
        raise ValueError("sorted safetensors header is longer than the original")
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n :]


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy tensors that share or only view storage: safetensors refuses to write those."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        storage = v.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != v.numel() * v.element_size():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def schema_of(path: str | os.PathLike[str]) -> str:
    """The ``schema`` entry of a safetensors file's metadata ('' when it has none)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise BadFile(p, "does not exist" if not p.exists() else "is not a file")
    try:
        with safe_open(str(p), framework="pt") as f:
            return (f.metadata() or {}).get("schema", "")
    except Exception as e:
        raise BadFile(p, f"is not a readable safetensors file ({_short(e)}); it may be truncated") from None


def read_header(path: str | os.PathLike[str], schema: Schema) -> tuple[dict[str, str], Any]:
    """Open ``path`` lazily and check it is a file of ``schema`` (name and version).

    Returns the raw safetensors metadata and the open handle's keys/shapes source. Used by
    :func:`read` and by callers that only need the metadata.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise BadFile(p, "does not exist", schema.made_by)
    if p.is_dir():
        raise BadFile(p, f"is a folder, expected a {schema.id} file", schema.made_by)
    try:
        handle = safe_open(str(p), framework="pt")
        header = handle.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise BadFile(p, f"is not a readable safetensors file ({_short(e)}); it may be truncated",
                      schema.made_by) from None
    check_schema_id(p, header.get("schema"), schema)
    return header, handle


def read(path: str | os.PathLike[str], schema: Schema, *, load: bool = True) -> TensorFile:
    """Read and validate a file of ``schema``; ``load=False`` checks it without loading tensors."""
    p = Path(path)
    header, handle = read_header(p, schema)
    meta = check_meta(p, header, schema)
    try:
        keys = list(handle.keys())
        slices = {k: handle.get_slice(k) for k in keys}
        shapes = {k: tuple(s.get_shape()) for k, s in slices.items()}
        dtypes = {k: _SAFE_DTYPES.get(s.get_dtype(), s.get_dtype().lower()) for k, s in slices.items()}
    except Exception as e:
        raise BadFile(p, f"is not a readable safetensors file ({_short(e)})", schema.made_by) from None
    try:
        dims = _check_shapes(schema, shapes, dtypes)
    except ValueError as e:
        raise BadFile(p, str(e), schema.made_by) from None
    tensors: dict[str, torch.Tensor] = {}
    if load:
        try:
            tensors = {k: handle.get_tensor(k) for k in keys}
        except Exception as e:
            raise BadFile(p, f"has unreadable tensor data ({_short(e)}); it may be truncated", schema.made_by) from None
    return TensorFile(p, tensors, meta, dims, shapes, header.get("ovdiff", "?"))


def _short(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."
