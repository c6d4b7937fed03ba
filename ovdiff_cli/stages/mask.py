"""mask: foreground and background masks of each support image (docs/method.md §3).

With a proposer (CutLER by default): its class-agnostic instance masks, plus the region none of
them covers, are ranked by mean attribution; the top one is foreground, the lowest background
(refined), with the threshold fallback per image. With ``threshold`` (the paper's "w/o CutLER"):
multi-Otsu thresholds of the class's attribution maps. ``auto`` takes CutLER when it can be
loaded, else ``threshold``, and says so once.

Masks are written at the attribution's size (the support images' size for sampled sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli import log
from ovdiff_cli.core import masks as core
from ovdiff_cli.core.pictures import overlay as mask_overlay
from ovdiff_cli.core.settings import MaskSettings
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.supportset import (BACKGROUND, FOREGROUND, MASK_OVERLAY_SCHEMA, MASK_SCHEMA, PROPOSALS,
                                           SupportSet)
from ovdiff_cli.models import registry
from ovdiff_cli.models.cutler import CutlerProposer
from ovdiff_cli.models.interfaces import MaskProposer
from ovdiff_cli.models.rcnn.detector import CascadeMaskRCNN
from ovdiff_cli.stages.support import load_images

THRESHOLD = "threshold"
MASKS_EXIST = log.Repeated(lambda paths: log.counted(paths, "{item}: masks exist, skipped",
                                                     "{n} support sets have their masks, skipped (first: {first})"))


def resolve_proposer(name: str, *, preset: str, device: torch.device, dtype: torch.dtype,
                     settings: MaskSettings) -> MaskProposer | None:
    """The proposer called ``name`` in ``preset`` (None = attribution thresholds)."""
    if name == THRESHOLD:
        return None
    p = registry.get_preset(preset)
    if name == "auto":
        if "proposer.cutler" not in p.slots:
            # nothing to fix: the preset was chosen without a detector, so this is a note, not a warning
            log.note_once("proposer", f"preset {p.name!r} has no CutLER, so masks come from thresholding the "
                                      "attribution maps (as with --proposer threshold)")
            return None
        try:
            return as_proposer(registry.load(p, "proposer.cutler", device, dtype), settings)
        except ModelUnavailable as e:
            log.warn_once("proposer", f"CutLER is not available (looked in {e.where}), so masks come from "
                                      f"thresholding the attribution maps (--proposer threshold). For CutLER: {e.fix}")
            return None
    return as_proposer(registry.load(p, f"proposer.{name}", device, dtype), settings)


def as_proposer(obj: Any, settings: MaskSettings) -> MaskProposer:
    """A :class:`MaskProposer` from what a ``proposer.*`` slot loads (CutLER's slot loads the detector)."""
    if isinstance(obj, CascadeMaskRCNN):
        return CutlerProposer(obj, score_threshold=settings.score_threshold, max_detections=settings.max_detections,
                              min_size=settings.min_size, max_size=settings.max_size)
    if isinstance(obj, MaskProposer):
        return obj
    raise ModelUnavailable(type(obj).__name__, "the registry", "a proposer slot must load a MaskProposer")


class FolderMasker:
    """Masks of one support set at a time, with resume and the optional extras."""

    def __init__(self, proposer: MaskProposer | None, settings: MaskSettings, batch_size: int, overwrite: bool,
                 overlay: bool, save_proposals: bool, models: dict[str, Any] | None = None) -> None:
        self.proposer = proposer
        self.settings = settings
        self.batch_size = batch_size
        self.overwrite = overwrite
        self.want_overlay = overlay
        self.save_proposals = save_proposals
        self.source = proposer.name if proposer is not None else THRESHOLD
        self.models = models

    def run(self, s: SupportSet) -> Path:
        with locked(s.path):  # never while `sample`, `attribute` or another `mask` writes this set
            return self._run(s)

    def _run(self, s: SupportSet) -> Path:
        if not s.attribution_path.is_file():
            raise BadFile(s.attribution_path, "does not exist", fix="make it with `ovdiff attribute`")
        att = s.read_attribution()
        indices = s.image_indices()
        if att.maps.shape[0] != len(indices):
            raise BadFile(s.attribution_path, f"holds {att.maps.shape[0]} maps, the folder {len(indices)} images",
                          fix="rerun `ovdiff attribute --overwrite`")
        attribution = file_sha256(s.attribution_path)
        images = {i: file_sha256(s.image_path(i)) for i in indices}
        settings = {"proposer": self.source, "settings": self.settings.to_meta(), "models": self.models}
        todo = [i for i in indices if not self._reusable(s.mask_path(i), MASK_SCHEMA, settings,
                                                         {"attribution": attribution, "image": images[i]})]
        if self.save_proposals and self.proposer is not None:
            whole = {"attribution": attribution, "images": [images[i] for i in indices]}
            if todo or not self._reusable(s.proposals_path, PROPOSALS.id, settings, whole):
                todo = list(indices)  # the proposals file covers the whole set: rebuild it whole
        if self.want_overlay or (todo and self.proposer is not None):
            for i in indices:  # a broken image fails here, before any mask or overlay is written
                s.read_image(i)
        if todo:
            self._make(s, att.maps, att.maps64, indices, todo, settings, attribution, images)
        else:
            log.repeat(MASKS_EXIST, s.path)
        if self.want_overlay:
            self._overlays(s, indices, int(att.maps.shape[-1]), images)
        return s.path

    def _reusable(self, path: Path, schema: str, settings: dict[str, Any], inputs: dict[str, Any]) -> bool:
        return provenance.decide(path, schema, stage="mask", inputs=inputs, settings=settings,
                                 overwrite=self.overwrite)

    def _make(self, s: SupportSet, maps: torch.Tensor, maps64: torch.Tensor, indices: Sequence[int],
              todo: Sequence[int], settings: dict[str, Any], attribution: str, images: dict[int, str]) -> None:
        name = s.read_image(indices[0])[1].get("class", s.path.name)

        def wanted(i: int) -> dict[str, Any]:  # each mask is made from the set's attribution and its image
            return provenance.identity({"attribution": attribution, "image": images[i]}, settings)

        position = {i: k for k, i in enumerate(indices)}
        if self.proposer is None:
            found = core.multi_otsu(maps64, self.settings.otsu_bins)
            lo, hi = found if found is not None else self.settings.otsu_fallback
            extra = {"thresholds": [lo, hi], "otsu": found is not None}
            for i in log.progress(todo, desc=f"mask {s.path.name}", unit="img"):
                a = maps[position[i]]
                self._write(s, i, a > hi, a < lo, {**wanted(i), "class": name, "mode": THRESHOLD, **extra})
            return
        kept: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        size = int(maps.shape[-1])
        batches = [list(todo[k : k + self.batch_size]) for k in range(0, len(todo), self.batch_size)]
        for batch in log.progress(batches, desc=f"mask {s.path.name}", unit="batch"):
            for i, props in zip(batch, self.proposer.propose(load_images(s, batch, size))):
                if props.masks.shape[-2:] != (size, size):
                    raise ModelUnavailable(self.source, "its output", f"proposer returned masks of "
                                           f"{list(props.masks.shape[-2:])} for {size}² images")
                sel = core.select(props.masks, maps[position[i]], self.settings)
                meta = {**wanted(i), "class": name, "mode": self.source if sel.mode == "proposals" else "fallback",
                        "proposals": int(props.masks.shape[0]), "scores": sel.scores,
                        "detector_scores": [float(x) for x in props.scores], "fg_index": sel.fg_index,
                        "bg_index": sel.bg_index}
                self._write(s, i, sel.fg, sel.bg, meta)
                kept.append((props.masks, props.scores, i))
        if self.save_proposals:
            masks = torch.cat([m for m, _, _ in kept]) if kept else torch.zeros(0, size, size, dtype=torch.bool)
            scores = torch.cat([sc.float() for _, sc, _ in kept]) if kept else torch.zeros(0)
            image = torch.tensor([i for m, _, i in kept for _ in range(m.shape[0])], dtype=torch.long)
            whole = {"attribution": attribution, "images": [images[i] for i in indices]}
            meta = {**provenance.identity(whole, settings), "class": name}
            s.write_proposals(core.SetProposals(masks, scores, image, meta))

    def _write(self, s: SupportSet, i: int, fg: torch.Tensor, bg: torch.Tensor, meta: dict[str, Any]) -> None:
        if bool((fg & bg).any()):  # the rules make them disjoint; a mask file can hold only one label
            raise AssertionError(f"foreground and background overlap in image {i} of {s.path}")
        out = torch.zeros(fg.shape, dtype=torch.uint8)
        out[fg] = FOREGROUND
        out[bg] = BACKGROUND
        s.write_mask(i, out.numpy(), {**meta, "fg_pixels": int(fg.sum()), "bg_pixels": int(bg.sum())})

    def _overlays(self, s: SupportSet, indices: Sequence[int], size: int, images: dict[int, str]) -> None:
        """fg (red) and bg (blue) over each image; each remade only when its mask or image changed."""
        for i in indices:
            inputs = {"mask": file_sha256(s.mask_path(i)), "image": images[i]}
            if self._reusable(s.overlay_path(i), MASK_OVERLAY_SCHEMA, {}, inputs):
                continue
            m = torch.from_numpy(s.read_mask(i)[0])
            picture = mask_overlay(load_images(s, [i], size)[0], m == FOREGROUND, m == BACKGROUND)
            s.write_overlay(i, picture.numpy(), provenance.identity(inputs, {}))


@log.stage()
def mask(folders: Sequence[Path], *, proposer: str = "auto", preset: str = "paper", device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, settings: MaskSettings = MaskSettings(), batch_size: int = 8,
         overwrite: bool = False, overlay: bool = False, save_proposals: bool = False) -> list[Path]:
    """Write ``masks/`` (and optionally ``overlays/``, ``proposals.safetensors``) in each folder."""
    sets = [SupportSet.open(f) for f in folders]  # every folder checked before any model loads
    if save_proposals and proposer == THRESHOLD:
        raise BadInput("--save-proposals needs a proposer; --proposer threshold has none",
                       "drop --save-proposals or choose --proposer cutler")
    chosen = resolve_proposer(proposer, preset=preset, device=torch.device(device), dtype=dtype, settings=settings)
    settings = replace(settings, proposer=chosen.name if chosen is not None else THRESHOLD)
    if save_proposals and chosen is None:
        log.warn_once("no-proposals", "--save-proposals: thresholding has no proposals to save")
    masker = FolderMasker(chosen, settings, batch_size, overwrite, overlay, save_proposals and chosen is not None,
                          _proposer_models(preset, "cutler" if proposer == "auto" else proposer, chosen))
    return [masker.run(s) for s in sets]


def _proposer_models(preset: str, name: str, chosen: MaskProposer | None) -> dict[str, Any]:
    """What the masks record of the model behind them: the proposer's component (none for thresholds).

    Not the whole preset: masks made by one proposer are the same whatever else a preset holds.
    """
    if chosen is None:
        return {}
    comp = registry.get_preset(preset).component(f"proposer.{name}")
    return {"proposer": comp.key, "tiny": comp.tiny}
