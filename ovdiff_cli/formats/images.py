"""Image files: decoding any user image to 8-bit RGB, and PNGs with ovdiff metadata.

Decoding follows METHOD.md §7.1: grayscale → the channel replicated; RGBA/LA → alpha dropped (no
compositing); palette → RGB; more than 8 bits → scaled to 8 bits.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.atomic import atomic_path

#: Name of the PNG text chunk holding ovdiff's JSON metadata.
TEXT_KEY = "ovdiff"


def open_image(path: str | os.PathLike[str], made_by: str | None = None) -> Image.Image:
    """Open and fully decode an image file, or fail with a one-line :class:`BadFile`."""
    p = Path(path)
    if not p.is_file():
        raise BadFile(p, "does not exist" if not p.exists() else "is not a file", made_by)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
            im.load()
    except Exception as e:
        raise BadFile(p, f"is not a readable image ({' '.join(str(e).split())[:100]}); it may be truncated",
                      made_by) from None
    return im


def to_rgb8(im: Image.Image) -> tuple[np.ndarray, str | None]:
    """Convert a decoded image to uint8 RGB [H, W, 3]; also say what was converted, if anything."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy(), None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        # 16-bit PNGs decode as I;16 or I; scale the full 16-bit range down to 8 bits.
        top = 65535.0 if mode != "F" else max(float(arr.max()), 1.0)
        arr8 = np.clip(np.floor(arr / top * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2), f"{mode} (more than 8 bits) scaled to 8-bit RGB"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        base = im.convert("RGBA").convert("RGB") if mode != "RGBA" else im.convert("RGB")
        return np.asarray(base, dtype=np.uint8).copy(), f"{mode}: alpha dropped"
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), "grayscale: channel replicated to RGB"
    if mode == "P":
        rgb = im.convert("RGBA" if "transparency" in im.info else "RGB").convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy(), "palette converted to RGB"
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), f"{mode} converted to RGB"


def read_rgb(path: str | os.PathLike[str], made_by: str | None = None) -> tuple[np.ndarray, str | None]:
    """Read any image as uint8 RGB [H, W, 3], with a note of the conversion applied (or None)."""
    return to_rgb8(open_image(path, made_by))


def png_metadata(im: Image.Image, path: str | os.PathLike[str], made_by: str | None = None) -> dict[str, Any]:
    """The ovdiff JSON object stored in a PNG's text chunk, or {} when there is none."""
    raw = im.info.get(TEXT_KEY)  # PNG text chunks land in info once the image is loaded
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise BadFile(path, f"has an unreadable '{TEXT_KEY}' text chunk (invalid JSON)", made_by) from None
    if not isinstance(meta, dict):
        raise BadFile(path, f"has an unreadable '{TEXT_KEY}' text chunk (not a JSON object)", made_by)
    return meta


def write_png(path: str | os.PathLike[str], im: Image.Image, meta: dict[str, Any] | None = None) -> Path:
    """Write ``im`` as PNG atomically, with ``meta`` as JSON in the ``ovdiff`` text chunk."""
    info = None
    if meta is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(TEXT_KEY, json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def write_rgb_png(path: str | os.PathLike[str], rgb: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
    """Write uint8 RGB [H, W, 3] as PNG with metadata."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    return write_png(path, Image.fromarray(rgb, mode="RGB"), meta)
