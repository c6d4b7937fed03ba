"""segment's overlay: the label map drawn over the image, with a legend of every class.

Regions are drawn as :func:`ovdiff_cli.core.pictures.paint` draws them (an outline in the
label map's own palette colour, a lighter fill), and each legend swatch is drawn the same way
over the legend's white paper, so a swatch matches its regions whatever the photo beneath them.
Background is left as the photo. Every class of the vocabulary is in the legend: those with
pixels by swatch, the others by name, saying why they have none (the CLIP pre-filter dropped
them, or no pixel chose them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ovdiff_cli.core.pictures import OUTLINE_WIDTH, paint
from ovdiff_cli.formats.labelmap import IGNORE, PALETTE

#: Why a class of the vocabulary has no pixels, as the legend says it.
NOT_IN_IMAGE = "not in image (CLIP)"
NO_PIXELS = "no pixels"

PAPER = (255, 255, 255)
INK = (0, 0, 0)
NOTE_INK = (90, 90, 90)
PAD, ROW, SWATCH, GAP = 4, 16, 12, 6


@dataclass(frozen=True)
class LegendEntry:
    """One line of the legend."""

    label: int                           # the index in the label map (0 background)
    name: str
    colour: tuple[int, int, int]         # the label map's palette colour, as outlines draw it
    note: str = ""                       # "" for a label with pixels; else NOT_IN_IMAGE or NO_PIXELS


def legend_entries(labels: np.ndarray, names: Sequence[str], active: Sequence[bool] | None = None) -> list[LegendEntry]:
    """The legend of the label map ``labels`` uint8 [H, W] over the vocabulary ``names`` (label
    i = names[i − 1]): the labels present, in label order, then every other class with its note.
    ``active`` (bool per label 0..C, None for all): the classes the CLIP pre-filter kept."""
    present = [int(v) for v in np.unique(labels)]

    def name(v: int) -> str:
        return "background" if v == 0 else "ignore" if v == IGNORE else names[v - 1]

    def colour(v: int) -> tuple[int, int, int]:
        r, g, b = (int(c) for c in PALETTE[v])
        return r, g, b

    out = [LegendEntry(v, name(v), colour(v)) for v in present]
    for v in range(1, len(names) + 1):
        if v not in present:
            dropped = active is not None and not bool(active[v])
            out.append(LegendEntry(v, name(v), colour(v), NOT_IN_IMAGE if dropped else NO_PIXELS))
    return out


def swatch(entry: LegendEntry) -> np.ndarray:
    """uint8 [SWATCH, SWATCH, 3]: a square region of ``entry`` drawn as regions are, on the paper;
    background, which the overlay leaves as the photo, is a plain square in a thin grey frame."""
    if entry.label == 0:
        out = np.full((SWATCH, SWATCH, 3), PAPER, np.uint8)
        out[[0, -1], :] = out[:, [0, -1]] = 160
        return out
    labels = torch.zeros(SWATCH + 2 * OUTLINE_WIDTH, SWATCH + 2 * OUTLINE_WIDTH, dtype=torch.int64)
    labels[OUTLINE_WIDTH:-OUTLINE_WIDTH, OUTLINE_WIDTH:-OUTLINE_WIDTH] = 1  # a square with paper around it
    colours = torch.tensor([PAPER, entry.colour], dtype=torch.uint8)
    big = paint(torch.tensor(PAPER, dtype=torch.uint8).expand(*labels.shape, 3).clone(), labels, colours, (1,))
    return big[OUTLINE_WIDTH:-OUTLINE_WIDTH, OUTLINE_WIDTH:-OUTLINE_WIDTH].numpy()


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _drawable(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` as the font can draw it (Pillow's bitmap font knows Latin-1 only)."""
    try:
        font.getbbox(text)
        return text
    except UnicodeEncodeError:
        return text.encode("latin-1", "replace").decode("latin-1")


def _wrap(head: str, items: list[str], width: int, draw: ImageDraw.ImageDraw,
          font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """``head: a, b, c`` broken between items into lines of at most ``width`` pixels (an item
    longer than a line gets a line of its own)."""
    lines, line = [], f"{head}:"
    for k, item in enumerate(items):
        piece = f" {item}" + ("," if k < len(items) - 1 else "")
        if draw.textlength(line + piece, font=font) > width and line.strip():
            lines.append(line)
            line = "  " + piece.strip()
        else:
            line += piece
    return [*lines, line]


def render_legend(entries: Sequence[LegendEntry], width: int) -> np.ndarray:
    """uint8 [h, w ≥ width, 3]: the labels with pixels as swatches with names, in as many columns
    as fit in ``width``; then, per note, one paragraph naming the classes that have it."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = [e for e in entries if not e.note]
    texts = [_drawable(e.name, font) for e in shown]
    col = SWATCH + GAP + max((int(probe.textlength(t, font=font)) for t in texts), default=0) + 2 * GAP
    width = max(width, 2 * PAD + col)
    ncols = max(1, (width - 2 * PAD) // col)
    nrows = -(-len(shown) // ncols)
    notes: list[str] = []
    for note in (NOT_IN_IMAGE, NO_PIXELS):
        items = [_drawable(e.name, font) for e in entries if e.note == note]
        if items:
            notes += _wrap(note, items, width - 2 * PAD, probe, font)
    canvas = Image.new("RGB", (width, 2 * PAD + ROW * (nrows + len(notes))), PAPER)
    draw = ImageDraw.Draw(canvas)
    for k, (entry, text) in enumerate(zip(shown, texts)):
        x, y = PAD + (k % ncols) * col, PAD + (k // ncols) * ROW
        canvas.paste(Image.fromarray(swatch(entry)), (x, y + (ROW - SWATCH) // 2))
        draw.text((x + SWATCH + GAP, y + 2), text, fill=INK, font=font)
    for k, line in enumerate(notes):
        draw.text((PAD, PAD + (nrows + k) * ROW + 2), line, fill=NOTE_INK, font=font)
    return np.asarray(canvas)


def overlay_picture(rgb: np.ndarray, labels: np.ndarray, names: Sequence[str],
                    active: Sequence[bool] | None = None) -> np.ndarray:
    """uint8 [H + h, max(W, w), 3]: the regions of ``labels`` uint8 [H, W] drawn over ``rgb``
    uint8 [H, W, 3], above the legend of every class (:func:`legend_entries`)."""
    entries = legend_entries(labels, names, active)
    painted = [e.label for e in entries if not e.note and e.label != 0]
    picture = paint(torch.from_numpy(np.ascontiguousarray(rgb)), torch.from_numpy(labels.astype(np.int64)),
                    torch.from_numpy(PALETTE), painted).numpy()
    legend = render_legend(entries, picture.shape[1])
    if legend.shape[1] > picture.shape[1]:  # a legend wider than a small image: white beside the image
        side = np.full((picture.shape[0], legend.shape[1] - picture.shape[1], 3), PAPER, np.uint8)
        picture = np.concatenate([picture, side], axis=1)
    return np.concatenate([picture, legend], axis=0)
