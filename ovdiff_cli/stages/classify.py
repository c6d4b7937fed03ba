"""classify: the CLIP category pre-filter of each image (METHOD.md §6).

Per image: its global CLIP embedding; p = softmax over the thing classes of the cosines with
"a {prompt}"; the classes with p ≥ 1/|C| (at most 10); the best "a X and a Y …" prompt over every
subset of them. Active classes = that subset plus every stuff class. Text embeddings are
cached by prompt, so the class prompts are encoded once and subset prompts once per run.
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
from ovdiff_cli.errors import BadFile, ModelUnavailable
from ovdiff_cli.formats.candidates import Candidates, read_candidates, write_candidates
from ovdiff_cli.formats.images import read_rgb
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


def classify(images: Sequence[Path], vocab: Vocabulary, preset: str = "paper", device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32, batch_size: int = 32, max_keep: int = cf.MAX_KEEP,
             existing: Path | None = None, overwrite: bool = False) -> list[Candidates]:
    """One :class:`Candidates` per image, in order. Records already in ``existing`` (same vocabulary
    and settings) are reused unless ``overwrite``."""
    p = registry.get_preset(preset)
    settings: dict[str, Any] = {"model": p.component("scorer").key, "max_keep": max_keep,
                                "vocabulary_sha256": vocab.digest()[:16]}
    things = [c for c in vocab.classes if not c.is_stuff]
    stuff = [c.name for c in vocab.classes if c.is_stuff]
    for path in images:  # fail before any model loads
        if not Path(path).is_file():
            raise BadFile(path, "does not exist" if not Path(path).exists() else "is not a file",
                          fix="give image files")
    reuse = _reusable(existing, vocab, settings, overwrite)
    todo = [i for i, path in enumerate(images) if str(path) not in reuse]
    out: dict[int, Candidates] = {i: reuse[str(path)] for i, path in enumerate(images) if str(path) in reuse}
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
                out[i] = _record(images[i], vocab, things, stuff, d, settings)
    for i in todo:
        if i not in out:  # a vocabulary of stuff only: the filter is skipped
            out[i] = Candidates(str(images[i]), {}, [], [], 0.0, list(stuff), vocab.name, {"settings": settings})
    return [out[i] for i in range(len(images))]


def _record(image: Path, vocab: Vocabulary, things: list, stuff: list[str], d: cf.Decision,
            settings: dict[str, Any]) -> Candidates:
    active = {things[i].name for i in d.subset} | set(stuff)
    return Candidates(str(image), {c.name: p for c, p in zip(things, d.p)}, [things[i].name for i in d.kept],
                      [things[i].name for i in d.subset], d.subset_score,
                      [n for n in vocab.names if n in active], vocab.name, {"settings": settings})


def _reusable(existing: Path | None, vocab: Vocabulary, settings: dict[str, Any],
              overwrite: bool) -> dict[str, Candidates]:
    if existing is None or overwrite or not existing.is_file():
        return {}
    records = read_candidates(existing)
    odd = [r for r in records if r.vocabulary != vocab.name or r.extra.get("settings") != settings]
    if odd:
        raise BadFile(existing, f"holds candidates of {odd[0].image} made with another vocabulary or settings",
                      fix="pass --overwrite to replace it, or choose another -o")
    return {r.image: r for r in records}


def _warn_long_prompts(scorer: Any, prompts: list[str]) -> None:
    """Subset prompts longer than 77 tokens get cut by the encoder; say so once (METHOD.md §6).

    ``prompts`` are an image's kept classes: the subset of all of them is the longest prompt.
    """
    from ovdiff_cli.models.clip import OpenClip, token_count

    if isinstance(scorer, OpenClip) and prompts and token_count(scorer, cf.subset_prompt(prompts)) > 77:
        log.warn_once("long-subset-prompt", "the longest subset prompts exceed CLIP's 77 tokens and are cut "
                                            "(their last classes lose weight)")


def with_earlier(existing: Path | None, records: Sequence[Candidates]) -> list[Candidates]:
    """The records to write back: those of ``existing`` for images not asked about this time, in
    their order, then ``records`` (so a file grows with each run instead of losing images)."""
    if existing is None or not existing.is_file():
        return list(records)
    now = {r.image for r in records}
    return [r for r in read_candidates(existing) if r.image not in now] + list(records)
