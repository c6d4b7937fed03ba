"""Palette label maps: one byte per pixel, 0 = background, i = the i-th vocabulary class, 255 = ignore.

The palette is fixed (the PASCAL VOC colour map extended to all 256 indices, so 255 is the
familiar light "ignore" colour), so the same class index has the same colour in every file.
Readers accept palette ("P") and 8-bit grayscale ("L") PNGs, as benchmark ground truths come in
both; anything else is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.images import open_image, png_metadata, write_png

IGNORE = 255

#: Schemas in the ``ovdiff`` text chunk of the PNGs `ovdiff segment` writes: the label map, and
#: the overlay picture beside it (so a picture is never taken for a prediction, whatever its name).
LABELMAP_SCHEMA = "ovdiff.labelmap/1"
OVERLAY_SCHEMA = "ovdiff.overlay/1"


def palette() -> np.ndarray:
    """uint8 [256, 3]: index i's colour spreads i's bits over the high bits of R, G and B."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


PALETTE = palette()


def hex_colour(rgb: np.ndarray | tuple[int, int, int]) -> str:
    """``#rrggbb`` of an RGB triple."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def legend(names: list[str], colours: np.ndarray = PALETTE) -> list[list[Any]]:
    """[[label, class name, "#rrggbb"], …] for background (0) and each class (1..C): what a label
    map's ``legend`` metadata holds, so the PNG alone says which colour is which class."""
    return [[i, name, hex_colour(colours[i])] for i, name in enumerate(["background", *names])]


def write_label_map(path: str | os.PathLike[str], labels: np.ndarray, meta: dict[str, Any] | None = None,
                    colours: np.ndarray = PALETTE) -> Path:
    """Write uint8 [H, W] labels as a palette PNG atomically; ``colours`` uint8 [K ≤ 256, 3] is its
    palette (index == label, so readers need no palette)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"a label map is uint8 [H, W], got {labels.dtype} {list(labels.shape)}")
    im = Image.fromarray(labels, mode="L")
    im.putpalette(np.asarray(colours, dtype=np.uint8).tobytes())  # turns the L image into P with index == label
    return write_png(path, im, meta)


def read_label_map(path: str | os.PathLike[str], made_by: str | None = None) -> np.ndarray:
    """Read a label map as uint8 [H, W] (palette indices or gray values)."""
    im = open_image(path, made_by)
    if im.mode == "P":
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
            raise BadFile(path, f"is a {im.mode} image with labels above 255", made_by,
                          fix="save label maps as 8-bit palette or grayscale PNGs")
        return arr.astype(np.uint8)
    raise BadFile(path, f"is a {im.mode} image, not a label map (palette or 8-bit grayscale)", made_by,
                  fix="give label maps with one class index per pixel")


def read_label_map_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ovdiff metadata of a label map written by :func:`write_label_map` ({} if none)."""
    return png_metadata(open_image(path), Path(path))
