"""Image files: decoding any user image to 8-bit RGB, and PNGs with ovdiff metadata.

Decoding follows docs/method.md §7.1: grayscale → the channel replicated; RGBA/LA → alpha dropped (no
compositing); palette → RGB; more than 8 bits → scaled to 8 bits. Every image is turned upright by
its EXIF orientation first, and refused from its header when it has more pixels than
$OVDIFF_MAX_PIXELS (default :data:`DEFAULT_MAX_PIXELS`).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats.atomic import atomic_path

#: Name of the PNG text chunk holding ovdiff's JSON metadata.
TEXT_KEY = "ovdiff"


#: Most pixels an image may have unless :data:`MAX_PIXELS_ENV` says otherwise: Pillow's own
#: decompression-bomb limit (about 89.5 million), which a 20000 × 20000 or 100 MP image exceeds.
DEFAULT_MAX_PIXELS = 89_478_485
#: Environment variable that sets the limit (a whole number of pixels).
MAX_PIXELS_ENV = "OVDIFF_MAX_PIXELS"
#: The EXIF tag that says how the stored pixels must be turned to be shown upright.
EXIF_ORIENTATION = 0x0112

# Pillow's limit is a module global; it is swapped for ours while one image opens, so the lock keeps
# two threads from restoring each other's value.
_PIXEL_LIMIT_LOCK = threading.Lock()


def max_pixels() -> int:
    """The pixel limit: $OVDIFF_MAX_PIXELS when set, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    if not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(raw.strip().replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise BadInput(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels",
                       f"unset it (default {DEFAULT_MAX_PIXELS}) or set e.g. {MAX_PIXELS_ENV}=400000000")
    return limit


def _too_large(path: Path, size: tuple[int, int], limit: int, made_by: str | None) -> BadFile:
    w, h = size
    return BadFile(path, f"is {w}×{h} = {w * h:,} pixels, more than the limit of {limit:,}", made_by,
                   fix=f"shrink it, or raise the limit with the environment variable {MAX_PIXELS_ENV}={w * h}")


def _clip_words(text: str, most: int = 100) -> str:
    """``text`` on one line, at most ``most`` characters, cut between words (never inside one)."""
    words = text.split()
    out = ""
    for w in words:
        if len(out) + len(w) + 1 > most:
            return out + " …"
        out = f"{out} {w}" if out else w
    return out


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so pixels are what a viewer shows (docs/method.md §7.1).

    Only an orientation tag other than 1 changes anything: images without EXIF (PNGs ovdiff writes,
    label maps, ground truths) come back as they are, text chunks included.
    """
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF: the pixels are still fine, shown as stored, as most viewers do
        return im
    if orientation in (None, 1):
        return im
    turned = ImageOps.exif_transpose(im)  # keeps im.info; unknown orientation values change nothing
    return turned if turned is not None else im


def _decode(p: Path, made_by: str | None, load: bool) -> Image.Image:
    """Open ``p`` with the pixel limit checked from its header; decode the pixels when ``load``."""
    if not p.is_file():
        raise BadFile(p, "does not exist" if not p.exists() else "is not a file", made_by)
    limit = max_pixels()
    try:
        with _PIXEL_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            # Pillow's own check in open() would refuse before the size is known, with its wording;
            # ours reads the header's size first. Frames decoded later (GIF) keep a check at our limit.
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(p)
                if im.size[0] * im.size[1] > limit:
                    im.close()
                    raise _too_large(p, im.size, limit, made_by)
                Image.MAX_IMAGE_PIXELS = limit
                if load:
                    im.load()
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except BadFile:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadFile(p, f"holds a frame of more than {limit:,} pixels", made_by,
                      fix=f"raise the limit with the environment variable {MAX_PIXELS_ENV}") from None
    except Exception as e:
        raise BadFile(p, f"is not a readable image ({_clip_words(str(e))}); it may be truncated",
                      made_by) from None
    return im


def open_image(path: str | os.PathLike[str], made_by: str | None = None) -> Image.Image:
    """Open and fully decode an image file, upright by its EXIF orientation, or fail with a one-line
    :class:`BadFile`. Images over :func:`max_pixels` are refused from the header, before decoding."""
    return _upright(_decode(Path(path), made_by, load=True))


def read_png_metadata(path: str | os.PathLike[str], made_by: str | None = None) -> dict[str, Any]:
    """The ovdiff JSON object of an image file ({} when it has none), read from the header when the
    text chunk comes before the pixels (as ovdiff writes it), so the pixels are not decoded."""
    p = Path(path)
    with _decode(p, made_by, load=False) as im:
        if TEXT_KEY in im.info:
            return png_metadata(im, p, made_by)
    return png_metadata(open_image(p, made_by), p, made_by)  # a chunk after the pixels shows once decoded


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
