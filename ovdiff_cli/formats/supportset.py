"""Support-set folders: one per class, shared by sample, attribute, mask and prototype.

Layout::

    <folder>/images/00000.png     RGB; generation parameters as JSON in the 'ovdiff' text chunk
    <folder>/crossattn.safetensors  recorded cross-attention (ovdiff.crossattn/1, by `ovdiff sample`)
    <folder>/attribution.safetensors attribution maps (ovdiff.attribution/1, by `ovdiff attribute`)
    <folder>/masks/00000.png      palette masks: 0 = neither (black), 1 = foreground (crimson), 2 = background (blue)
    <folder>/overlays/00000.png   fg/bg over the image, for a person to check (``mask --overlay``)

Images are numbered from 0 with five digits; mask ``k`` belongs to image ``k``. Every file
ovdiff writes here carries its schema, so ovdiff can tell its own files from a user's: it never
replaces or deletes one it did not write (:meth:`SupportSet.written_files`).

The tensor files are read and written as core's records: :class:`CrossAttention`,
:class:`AttentionBatch` and :class:`Attribution` (``ovdiff_cli.core.attention``) and
:class:`SetProposals` (``ovdiff_cli.core.masks``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovdiff_cli.core.attention import AttentionBatch, Attribution, CrossAttention
from ovdiff_cli.core.masks import SetProposals
from ovdiff_cli.core.pictures import BG_COLOUR, FG_COLOUR
from ovdiff_cli.core.tokens import CONTEXT_LENGTH
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.provenance import check_replaceable
from ovdiff_cli.formats.images import open_image, png_metadata, to_rgb8, write_rgb_png
from ovdiff_cli.formats.labelmap import read_label_map, write_label_map
from ovdiff_cli.formats.schemas import (ATTRIBUTION, CROSSATTN, CROSSATTN_PART, IMAGE_SCHEMA, MASK_OVERLAY_SCHEMA,
                                        MASK_SCHEMA, PROPOSALS)

#: Mask values.
NEITHER, FOREGROUND, BACKGROUND = 0, 1, 2
#: The masks' palette: neither black, fg and bg the colours every overlay draws them in.
MASK_PALETTE = np.array([(0, 0, 0), FG_COLOUR, BG_COLOUR], dtype=np.uint8)


_INDEX = re.compile(r"^(\d{5,})\.png$")


class SupportSet:
    """A support-set folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SupportSet:
        """An existing support set; fails unless ``path/images`` holds at least one image."""
        s = cls(path)
        if not s.path.is_dir():
            raise BadFile(s.path, "is not a support-set folder (it does not exist)", "ovdiff sample")
        if not s.image_indices():
            raise BadFile(s.path, "is not a support-set folder (no images/00000.png …)",
                          fix="make it with `ovdiff sample`, or from your own images with "
                              "`ovdiff sample CLASS --from-images IMAGE…`")
        return s

    # -- layout ---------------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    @property
    def masks_dir(self) -> Path:
        return self.path / "masks"

    @property
    def crossattn_path(self) -> Path:
        return self.path / "crossattn.safetensors"

    @property
    def attribution_path(self) -> Path:
        return self.path / "attribution.safetensors"

    @property
    def partial_dir(self) -> Path:
        return self.path / ".crossattn-partial"

    def partial_path(self, batch: int) -> Path:
        return self.partial_dir / f"batch-{batch:05d}.safetensors"

    @property
    def overlays_dir(self) -> Path:
        return self.path / "overlays"

    @property
    def proposals_path(self) -> Path:
        return self.path / "proposals.safetensors"

    def image_path(self, index: int) -> Path:
        return self.images_dir / f"{index:05d}.png"

    def mask_path(self, index: int) -> Path:
        return self.masks_dir / f"{index:05d}.png"

    def overlay_path(self, index: int) -> Path:
        return self.overlays_dir / f"{index:05d}.png"

    def image_indices(self) -> list[int]:
        """Indices of the images present, sorted (temporary files are ignored)."""
        if not self.images_dir.is_dir():
            return []
        found = (_INDEX.match(p.name) for p in self.images_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # -- images ---------------------------------------------------------------------------------
    def write_image(self, index: int, rgb: np.ndarray, meta: dict[str, Any]) -> Path:
        """Write image ``index`` (uint8 RGB [S, S, 3]) with its generation parameters."""
        return write_rgb_png(self.image_path(index), rgb, {"schema": IMAGE_SCHEMA, **meta})

    def read_image(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Image ``index`` as uint8 RGB [S, S, 3] and its metadata ({} for a user's own photo)."""
        path = self.image_path(index)
        im = open_image(path, "ovdiff sample")
        meta = png_metadata(im, path, "ovdiff sample")
        rgb, _ = to_rgb8(im)
        return rgb, meta

    def class_meta(self) -> dict[str, Any]:
        """The metadata of the first image (class, prompt, generation parameters)."""
        indices = self.image_indices()
        if not indices:
            raise BadFile(self.path, "has no images", "ovdiff sample")
        return self.read_image(indices[0])[1]

    # -- masks ----------------------------------------------------------------------------------
    def write_mask(self, index: int, mask: np.ndarray, meta: dict[str, Any]) -> Path:
        """Write mask ``index``: uint8 [S, S] with values 0 (neither), 1 (fg), 2 (bg)."""
        if mask.dtype != np.uint8 or mask.max(initial=0) > BACKGROUND:
            raise ValueError("a support mask is uint8 with values 0, 1, 2")
        return write_label_map(self.mask_path(index), mask, {"schema": MASK_SCHEMA, **meta}, colours=MASK_PALETTE)

    def read_mask(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Mask ``index`` as uint8 [S, S] in {0, 1, 2} and its metadata (e.g. the mask mode)."""
        path = self.mask_path(index)
        im = open_image(path, "ovdiff mask")
        meta = png_metadata(im, path, "ovdiff mask")
        if meta.get("schema") != MASK_SCHEMA:
            raise BadFile(path, f"is not an ovdiff support mask (schema {meta.get('schema')!r})", "ovdiff mask")
        mask = read_label_map(path, "ovdiff mask")
        if mask.max(initial=0) > BACKGROUND:
            raise BadFile(path, f"has value {int(mask.max())}, a support mask holds only 0, 1, 2", "ovdiff mask")
        return mask, meta

    def write_overlay(self, index: int, rgb: np.ndarray, meta: dict[str, Any]) -> Path:
        """Write overlay ``index`` (uint8 RGB [S, S, 3]) with what it was drawn from."""
        return write_rgb_png(self.overlay_path(index), rgb, {"schema": MASK_OVERLAY_SCHEMA, **meta})

    # -- tensors --------------------------------------------------------------------------------
    def write_crossattn(self, rec: CrossAttention) -> Path:
        _check_crossattn(rec, self.crossattn_path, strict=True)
        meta = {**rec.meta, "tokens": list(rec.tokens), "layers": list(rec.layers)}
        return tensorfile.write(self.crossattn_path, CROSSATTN, {
            "attn": rec.attn, "counts": rec.counts, "positions": rec.positions,
            "phrase_positions": rec.phrase_positions}, meta)

    def read_crossattn(self) -> CrossAttention:
        return read_crossattn(self.crossattn_path)

    def write_attribution(self, att: Attribution) -> Path:
        name = _outside_unit_interval(att)
        if name is not None:
            raise ValueError(f"refusing to write {self.attribution_path}: '{name}' has values outside [0, 1]")
        return tensorfile.write(self.attribution_path, ATTRIBUTION,
                                {"attribution": att.maps, "attribution64": att.maps64}, att.meta)

    def read_attribution(self) -> Attribution:
        return read_attribution(self.attribution_path)

    def write_proposals(self, rec: SetProposals) -> Path:
        """Write the proposals bit-packed; ``rec.meta`` needs class and proposer (size is added)."""
        masks = rec.masks
        size = int(masks.shape[-1]) if masks.ndim == 3 else 0
        packed = torch.from_numpy(np.packbits(masks.bool().numpy(), axis=-1)) if masks.numel() else \
            torch.zeros(0, size, (size + 7) // 8, dtype=torch.uint8)
        return tensorfile.write(self.proposals_path, PROPOSALS,
                                {"masks": packed, "scores": rec.scores.float(), "image": rec.image.long()},
                                {**rec.meta, "size": size})

    def read_proposals(self) -> SetProposals:
        return read_proposals(self.proposals_path)

    def write_partial(self, batch: int, rec: AttentionBatch) -> Path:
        """Attention of one finished batch of images (see :data:`CROSSATTN_PART`)."""
        return tensorfile.write(self.partial_path(batch), CROSSATTN_PART,
                                {"attn": rec.attn, "counts": rec.counts, "indices": rec.indices},
                                {"params": rec.params})

    def read_partial(self, batch: int) -> AttentionBatch:
        f = tensorfile.read(self.partial_path(batch), CROSSATTN_PART)
        return AttentionBatch(f.tensors["attn"], f.tensors["counts"], f.tensors["indices"], f.meta["params"])

    def _kinds(self) -> Iterator[tuple[Path, str]]:
        """Every file ovdiff may have written here, with the schema it writes there."""
        for folder, schema in ((self.images_dir, IMAGE_SCHEMA), (self.masks_dir, MASK_SCHEMA),
                               (self.overlays_dir, MASK_OVERLAY_SCHEMA), (self.partial_dir, CROSSATTN_PART.id)):
            if folder.is_dir():
                # Hidden names are temporary and lock files (swept by their own rules) or the
                # file manager's; they are neither ovdiff's outputs nor deleted by it.
                yield from ((p, schema) for p in sorted(folder.iterdir()) if not p.name.startswith("."))
        yield from ((self.crossattn_path, CROSSATTN.id), (self.attribution_path, ATTRIBUTION.id),
                    (self.proposals_path, PROPOSALS.id))

    def written_files(self) -> dict[Path, dict[str, Any]]:
        """Every file ovdiff wrote in this set, with its metadata.

        Raises :class:`BadFile` for the first file it did not write (a user's photo in
        ``images/``, a foreign PNG in ``masks/``) or that is of another kind than its place holds:
        such a set is not ovdiff's to replace, resume or clear.
        """
        found = {}
        for path, schema in self._kinds():
            meta = check_replaceable(path, schema)
            if meta is not None:
                found[path] = meta
        return found

    def clear(self) -> None:
        """Remove everything ovdiff wrote here (images, masks, overlays, tensors, partial batches).

        Every file is checked before the first is removed: a set that holds one file ovdiff did
        not write is refused whole and nothing is deleted.
        """
        for p in self.written_files():
            p.unlink(missing_ok=True)
        for folder in (self.images_dir, self.masks_dir, self.partial_dir, self.overlays_dir):
            with contextlib.suppress(OSError):  # absent, or holding hidden files of someone else's
                folder.rmdir()


def read_crossattn(path: str | os.PathLike[str]) -> CrossAttention:
    """Read and check a recorded cross-attention file."""
    f = tensorfile.read(path, CROSSATTN)
    meta = dict(f.meta)
    tokens, layers = meta.pop("tokens", None), meta.pop("layers", None)
    if not isinstance(tokens, list) or not isinstance(layers, list):
        raise BadFile(f.path, "lacks its token or layer names in the metadata", CROSSATTN.made_by)
    rec = CrossAttention(f.tensors["attn"], f.tensors["counts"], f.tensors["positions"],
                         f.tensors["phrase_positions"], tuple(tokens), tuple(layers), meta)
    _check_crossattn(rec, f.path, strict=False)
    return rec


def read_attribution(path: str | os.PathLike[str]) -> Attribution:
    """Read and check an attribution file (values must lie in [0, 1])."""
    f = tensorfile.read(path, ATTRIBUTION)
    att = Attribution(f.tensors["attribution"], f.tensors["attribution64"], f.meta)
    name = _outside_unit_interval(att)
    if name is not None:
        raise BadFile(f.path, f"tensor '{name}' has values outside [0, 1]", ATTRIBUTION.made_by)
    return att


def _outside_unit_interval(att: Attribution) -> str | None:
    """The stored name of the first map with a value outside [0, 1] (or not finite), or None.

    Min–max normalised maps lie in [0, 1]; the writer refuses and the reader rejects others.
    """
    for name, t in (("attribution", att.maps), ("attribution64", att.maps64)):
        if t.numel() and not (torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1):
            return name
    return None


def read_proposals(path: str | os.PathLike[str]) -> SetProposals:
    """The proposals of a file, masks unpacked to [J, S, S] bool."""
    f = tensorfile.read(path, PROPOSALS)
    size = int(f.meta["size"])
    packed = f.tensors["masks"].numpy()
    if packed.shape[-1] != (size + 7) // 8 or packed.shape[1] != size:
        raise BadFile(f.path, f"holds {list(packed.shape[1:])} packed bytes per mask for size {size}",
                      PROPOSALS.made_by)
    masks = torch.from_numpy(np.unpackbits(packed, axis=-1, count=size).astype(bool)) if packed.size else \
        torch.zeros(0, size, size, dtype=torch.bool)
    return SetProposals(masks, f.tensors["scores"], f.tensors["image"], f.meta)


def _check_crossattn(rec: CrossAttention, path: Path, strict: bool) -> None:
    """Consistency beyond shapes: names per token and layer, phrase within the recorded tokens."""
    problems = []
    if len(rec.tokens) != rec.positions.shape[0]:
        problems.append(f"{len(rec.tokens)} token names for {rec.positions.shape[0]} positions")
    if len(rec.layers) != rec.attn.shape[1]:
        problems.append(f"{len(rec.layers)} layer names for {rec.attn.shape[1]} layers")
    if rec.positions.numel() and (rec.positions.min() < 0 or rec.positions.max() >= CONTEXT_LENGTH):
        problems.append(f"token positions outside 0..{CONTEXT_LENGTH - 1}")
    if not set(rec.phrase_positions.tolist()) <= set(rec.positions.tolist()):
        problems.append("phrase positions that were not recorded")
    if rec.attn.numel() and not torch.isfinite(rec.attn).all():
        problems.append("non-finite attention values")
    if problems:
        if strict:
            raise ValueError(f"refusing to write {path}: " + "; ".join(problems))
        raise BadFile(path, "has " + "; ".join(problems), CROSSATTN.made_by)
