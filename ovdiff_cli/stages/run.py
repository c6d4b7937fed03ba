"""run: every stage for one vocabulary and a set of images, in one work folder.

    <work>/support/<class>/                   sample, attribute, mask (per class, reused)
    <work>/prototypes/<class>.<ex>.safetensors   prototype (per class, reused)
    <work>/vocabularies/<name>-<digest>/banks/   filter-stuff (per vocabulary; <name>: the
                                                 vocabulary's, or its first classes, run_plan.py)
    <work>/vocabularies/<name>-<digest>/candidates.jsonl, segmentation/   classify, segment
    <work>/vocabularies/<name>-<digest>/classes.txt   the vocabulary, as a vocabulary file

Each stage reuses what an earlier run left from the same inputs with the same settings
(formats/provenance.py), so adding a class to a vocabulary samples and pools only that class, and
rebuilds the cheap per-vocabulary parts; a changed image is classified and segmented again. The
stages run within ``provenance.within_run()``, so a conflict names a fix that exists on `run`:
another -o, or that stage alone with --overwrite. Before any stage, :func:`run_plan.check_ahead`
looks at every file they would reuse, so a conflict is said before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ovdiff_cli import log
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.images import open_image
from ovdiff_cli.formats.vocabulary import Vocabulary
from ovdiff_cli.stages.attribute import attribute
from ovdiff_cli.stages.classify import classify_into
from ovdiff_cli.stages.filter_stuff import filter_stuff
from ovdiff_cli.stages.mask import mask
from ovdiff_cli.stages.prototype import prototype
from ovdiff_cli.stages.run_plan import RunSettings, check_ahead, vocabulary_folder, write_class_list
from ovdiff_cli.stages.sample import sample
from ovdiff_cli.stages.segment import SideOutputs, plan_outputs, segment


def run(vocab: Vocabulary, images: Sequence[Path], *, work: Path, preset: str = "paper",
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, vit_dtype: torch.dtype | None = None,
        settings: RunSettings = RunSettings()) -> list[Path]:
    """Every stage in order; returns the label maps."""
    device = torch.device(device)
    settings = replace(settings, prototype=settings.prototype.resolved(device.type))
    for p in images:  # missing, unreadable, truncated or too large: said now, before hours of sampling
        open_image(p).close()
    here = vocabulary_folder(work, vocab)
    # Two images whose label maps (or overlays) would clash: refused now, not after the sampling.
    plan_outputs([Path(p) for p in images], here / "segmentation", ["overlay"] if settings.overlay else [])
    with provenance.within_run():
        # every file an earlier run left that a stage would refuse: refused now, before any drawing
        check_ahead(vocab, images, work=work, preset=preset, settings=settings)
        log.logger.info("sample → attribute → mask → prototype for %d classes in %s", len(vocab), work)
        models = {"preset": preset, "device": device, "dtype": dtype}
        folders = sample(vocab.classes, out=work / "support", settings=settings.sample, **models)
        attribute(folders, overwrite=False, batch_size=settings.batch_size)
        # CutLER in the ViTs' precision, as `ovdiff mask` runs it (float32 under --dtype auto)
        mask(folders, proposer=settings.proposer, settings=settings.mask, batch_size=settings.batch_size,
             **{**models, "dtype": vit_dtype if vit_dtype is not None else dtype})
        protos = prototype(folders, extractors=settings.extractors, out=work / "prototypes", vit_dtype=vit_dtype,
                           settings=settings.prototype, batch_size=settings.batch_size, **models)
        write_class_list(here, vocab)
        # only this run's extractors: banks an earlier run with other -x left in the folder are not used
        banks = [path for path, _ in filter_stuff(protos, vocab, out=here / "banks", settings=settings.bank)]
        candidates = None
        if settings.prefilter:
            candidates = classify_into(images, vocab, path=here / "candidates.jsonl", **models)
        return segment(images, banks, out=here / "segmentation", vit_dtype=vit_dtype, settings=settings.segment,
                       candidates=candidates, prefilter=settings.prefilter, batch_size=settings.batch_size,
                       sides=SideOutputs(overlay=settings.overlay), **models)
