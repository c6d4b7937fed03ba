"""classify: the CLIP category pre-filter of each image (docs/method.md §6).

Per image: its global CLIP embedding; p = softmax over the thing classes of the cosines with
"a {prompt}"; the classes with p ≥ 1/|C| (at most 10); the best "a X and a Y …" prompt over every
subset of them. Active classes = that subset plus every stuff class. Text embeddings are
cached by prompt, so the class prompts are encoded once and subset prompts once per run.

Each record carries the content digest of its image, the vocabulary's digest and the settings;
a rerun into the same file reuses a record only when all three match (formats/provenance.py).
The file is locked while it is read, extended and written back, so two runs into one file never
lose each other's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovdiff_cli import log
from ovdiff_cli.core import clipfilter as cf
from ovdiff_cli.core.tokens import CONTEXT_LENGTH
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.candidates import CANDIDATES_SCHEMA, Candidates, read_own_candidates, write_candidates
from ovdiff_cli.formats.images import read_rgb
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.vocabulary import Vocabulary
from ovdiff_cli.models import registry
from ovdiff_cli.models.interfaces import ClipScorer

TEXT_BATCH = 256


def clip_input(rgb: np.ndarray, size: int, short_side: int = 448) -> torch.Tensor:
    """uint8 [H, W, 3] → float [3, size, size] in [0, 1]: short side 448 (LANCZOS), squashed to
    512² (LANCZOS), then squashed to ``size`` as a tensor (bilinear, no antialias)."""
    im = Image.fromarray(rgb)
    w, h = im.size
    scale = short_side / min(w, h)
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    im = im.resize((512, 512), Image.LANCZOS)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


class TextCache:
    """Unit text embeddings by prompt, encoded in batches on first use."""

    def __init__(self, scorer: ClipScorer) -> None:
        self.scorer = scorer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        todo = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        for k in range(0, len(todo), TEXT_BATCH):
            chunk = todo[k : k + TEXT_BATCH]
            for p, e in zip(chunk, self.scorer.encode_texts(list(chunk)).float().cpu()):
                self.cache[p] = e
        return torch.stack([self.cache[p] for p in prompts])


def decide(image: torch.Tensor, prompts: Sequence[str], texts: TextCache, max_keep: int) -> cf.Decision:
    """The pre-filter for one image embedding [E] over candidate ``prompts``."""
    p = cf.probabilities(image, texts([f"a {q}" for q in prompts]))
    kept = cf.keep(p, max_keep)
    sets = cf.subsets(len(kept))
    subset_prompts = [cf.subset_prompt([prompts[kept[i]] for i in s]) for s in sets]
    scores = texts(subset_prompts).double() @ image.double()
    best = cf.best_subset(scores, sets)
    return cf.Decision([float(x) for x in p], kept, [kept[i] for i in sets[best]], float(scores[best]))


@log.stage()
def classify(images: Sequence[Path], vocab: Vocabulary, *, preset: str = "paper", device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32, batch_size: int = 32, max_keep: int = cf.MAX_KEEP,
             existing: Path | None = None, overwrite: bool = False) -> list[Candidates]:
    """One :class:`Candidates` per image, in order. Records already in ``existing`` (a candidates
    file ovdiff made) are reused when made from the same image content with the same vocabulary
    and settings, unless ``overwrite``; a file ovdiff did not make is refused even then."""
    p = registry.get_preset(preset)
    settings: dict[str, Any] = {"model": p.component("scorer").key, "max_keep": max_keep,
                                "vocabulary_sha256": vocab.digest()[:16]}
    things = [c for c in vocab.classes if not c.is_stuff]
    stuff = [c.name for c in vocab.classes if c.is_stuff]
    if not images:  # an empty file would not say who made it, so a rerun could not replace it
        raise BadInput("no images to classify", "give image files (or paths on stdin with `-`)")
    for path in images:  # fail before any model loads
        if not Path(path).is_file():
            raise BadFile(path, "does not exist" if not Path(path).exists() else "is not a file",
                          fix="give image files")
    digests = [file_sha256(path) for path in images]
    reuse = _reusable(existing, images, digests, settings, overwrite)
    todo = [i for i in range(len(images)) if i not in reuse]
    out: dict[int, Candidates] = dict(reuse)
    extra = {i: {"schema": CANDIDATES_SCHEMA, **provenance.identity({"image_sha256": digests[i]},
                                                                    {"settings": settings})} for i in todo}
    if todo and things:
        scorer = registry.load(p, "scorer", device, dtype)
        if not isinstance(scorer, ClipScorer):
            raise ModelUnavailable("scorer", "the registry", "its object is not a ClipScorer")
        texts = TextCache(scorer)
        batches = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
        for batch in log.progress(batches, desc="classify", unit="batch"):
            pixels = torch.stack([clip_input(read_rgb(images[i])[0], scorer.image_size) for i in batch])
            for i, g in zip(batch, scorer.encode_images(pixels).float().cpu()):
                d = decide(g, [c.prompt for c in things], texts, max_keep)
                _warn_long_prompts(scorer, [things[k].prompt for k in d.kept])
                out[i] = _record(images[i], vocab, things, stuff, d, extra[i])
    for i in todo:
        if i not in out:  # a vocabulary of stuff only: the filter is skipped
            out[i] = Candidates(str(images[i]), {}, [], [], 0.0, list(stuff), vocab.name, extra[i])
    return [out[i] for i in range(len(images))]


@log.stage()
def classify_into(images: Sequence[Path], vocab: Vocabulary, *, path: Path, preset: str = "paper",
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 32,
                  max_keep: int = cf.MAX_KEEP, overwrite: bool = False) -> Path:
    """Classify ``images`` into the candidates file ``path``, keeping its records of other images
    (all of them dropped with ``overwrite``). The file is locked from reading to writing."""
    with locked(path):
        records = classify(images, vocab, preset=preset, device=device, dtype=dtype, batch_size=batch_size,
                           max_keep=max_keep, existing=path, overwrite=overwrite)
        return write_candidates(path, with_earlier(None if overwrite else path, records))


def _record(image: Path, vocab: Vocabulary, things: list, stuff: list[str], d: cf.Decision,
            extra: dict[str, Any]) -> Candidates:
    active = {things[i].name for i in d.subset} | set(stuff)
    return Candidates(str(image), {c.name: p for c, p in zip(things, d.p)}, [things[i].name for i in d.kept],
                      [things[i].name for i in d.subset], d.subset_score,
                      [n for n in vocab.names if n in active], vocab.name, extra)


def _reusable(existing: Path | None, images: Sequence[Path], digests: Sequence[str], settings: dict[str, Any],
              overwrite: bool) -> dict[int, Candidates]:
    """Records of ``existing`` to reuse, by index into ``images``.

    Every record goes through the provenance rule: other settings are an error (also for images
    not asked about now, as the file would otherwise mix two vocabularies); a record of an image
    asked about now is reused only when its image's content is the same.
    """
    if existing is None:
        return {}
    records = read_own_candidates(existing)  # refuses a file ovdiff did not make, even with overwrite
    if records is None or overwrite:
        return {}
    asked = {str(path): i for i, path in enumerate(images)}
    reuse: dict[int, Candidates] = {}
    for r in records:
        i = asked.get(r.image)
        inputs = {"image_sha256": digests[i]} if i is not None else r.extra.get("inputs", {})
        same = provenance.compare(existing, r.extra, stage="classify", inputs=inputs,
                                  settings={"settings": settings})
        if same and i is not None:
            reuse[i] = r
    return reuse


def _warn_long_prompts(scorer: Any, prompts: list[str]) -> None:
    """Subset prompts longer than 77 tokens get cut by the encoder; say so once (docs/method.md §6).

    ``prompts`` are an image's kept classes: the subset of all of them is the longest prompt.
    """
    from ovdiff_cli.models.clip import OpenClip, token_count

    if (isinstance(scorer, OpenClip) and prompts
            and token_count(scorer, cf.subset_prompt(prompts)) > CONTEXT_LENGTH):
        log.warn_once("long-subset-prompt", f"the longest subset prompts exceed CLIP's {CONTEXT_LENGTH} tokens "
                                            "and are cut (their last classes lose weight); a lower --clip-topk "
                                            "shortens them")


def with_earlier(existing: Path | None, records: Sequence[Candidates]) -> list[Candidates]:
    """The records to write back: those of ``existing`` for images not asked about this time, in
    their order, then ``records`` (so a file grows with each run instead of losing images)."""
    earlier = read_own_candidates(existing) if existing is not None else None
    if earlier is None:
        return list(records)
    now = {r.image for r in records}
    return [r for r in earlier if r.image not in now] + list(records)
