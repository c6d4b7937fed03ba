"""sample: draw a support set per class with Stable Diffusion, recording cross-attention (docs/method.md §1).

Per class: reseed (python, numpy, torch) and start one CPU generator at the seed; initial noise
is drawn from it batch after batch in float16, so every class starts from the same noises and
only the prompt differs. Each finished batch writes its images and a partial attention file, so
a killed run resumes at the batch it was in; the partial files are joined into
``crossattn.safetensors`` when the set is complete.

The class folder is locked while its set is checked, drawn and joined, so a second process
that wants the same folder waits, then reuses the set or refuses it (other settings); the two
never mix their batches. Whether a folder is resumed, reused, replaced or refused follows the
one rule of :mod:`ovdiff_cli.formats.provenance`; a folder holding any file ovdiff did not write
(a user's photos) is refused, with or without ``--overwrite``.

:func:`from_images` builds a support set from a user's images instead (docs/method.md §4.2 edge
cases): decoded to 8-bit RGB as §7.1 says and squashed to the generator's square size.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovdiff_cli import log
from ovdiff_cli.core import tokens as tok
from ovdiff_cli.core.attention import AttentionBatch, CrossAttention
from ovdiff_cli.core.settings import SampleSettings
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.images import read_rgb
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.formats.vocabulary import VocabClass
from ovdiff_cli.models import registry
from ovdiff_cli.models.generator import SafetyFilter, as_generator
from ovdiff_cli.models.interfaces import Generator
from ovdiff_cli.shard import Shard
from ovdiff_cli.stages.support import check_writable, seed_everything

#: Safety-checker retries per flagged image before giving up.
MAX_REPLACEMENTS = 10
COMPLETE = log.Repeated(lambda folders: log.counted(folders, "{item}: complete, skipped",
                                                    "{n} support sets complete, skipped (first: {first})"))

#: The ``source`` of a drawn set's files, and of a set built from a user's images.
SOURCE_SD, SOURCE_IMAGES = "sd", "images"


@dataclass(frozen=True)
class PromptPlan:
    """A class's prompt, its tokens (without BOS/EOS) and the positions to record (BOS = 0)."""

    prompt: str
    phrase: str
    tokens: tuple[str, ...]
    positions: tuple[int, ...]
    phrase_positions: tuple[int, ...]


def plan_prompt(gen: Generator, vclass: VocabClass, template: str, free_prompt: str | None = None) -> PromptPlan:
    """Fill the template with the class prompt and find the phrase's tokens after the template prefix.

    Every token of the prompt is recorded (so `attribute --phrase` can pick another); the class
    phrase's positions are T(c). A free-text prompt records all tokens and takes all as the phrase.
    """
    if free_prompt is not None:
        prompt, phrase = " ".join(free_prompt.split()), " ".join(free_prompt.split())
        if not prompt:
            raise BadInput("--prompt is empty", "give the text to draw")
    else:
        try:
            before, after = tok.split_template(template)
        except ValueError as e:
            raise BadInput(f"--template: {e}", 'write e.g. --template "A good photo of a {}"') from None
        phrase = vclass.prompt
        prompt = f"{before}{phrase}{after}"
    tokens = gen.tokens(prompt)
    if len(tokens) > tok.MAX_TEXT_TOKENS:
        raise BadInput(f"class {vclass.name!r}: the prompt has {len(tokens)} tokens, only {tok.MAX_TEXT_TOKENS} "
                       "fit the text encoder, so the phrase would be cut off", "shorten the class's prompt")
    if free_prompt is not None:
        positions = tuple(range(1, len(tokens) + 1))
        return PromptPlan(prompt, phrase, tuple(tokens), positions, positions)
    phrase_tokens = gen.tokens(phrase)
    if not phrase_tokens:
        raise BadInput(f"class {vclass.name!r} has an empty prompt phrase", "give the class a name or prompt")
    try:
        at = tok.phrase_positions(tokens, gen.tokens(before) if before.strip() else [], phrase_tokens)
    except ValueError as e:
        raise BadInput(f"class {vclass.name!r}: {e}", "check --template") from None
    return PromptPlan(prompt, phrase, tuple(tokens), tuple(range(1, len(tokens) + 1)), tuple(at))


@contextlib.contextmanager
def deterministic_mode() -> Iterator[None]:
    """docs/method.md §1: deterministic algorithms (warn only), no cuDNN autotuning, a fixed cuBLAS workspace.

    The previous settings come back afterwards: they are process-wide, and the Python API must
    not leave them changed behind a caller's back.
    """
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, S, S] in [0, 1] → uint8 [B, S, S, 3] by ⌊255 x⌋ (truncation, as the official pipeline)."""
    return (images.clamp(0, 1) * 255).floor().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class ClassSampler:
    """Draws one class's support set into a folder (see the module docstring)."""

    def __init__(self, gen: Generator, settings: SampleSettings, models_meta: dict[str, Any],
                 safety: SafetyFilter | None = None) -> None:
        self.gen = gen
        self.settings = settings
        self.models_meta = models_meta
        self.safety = safety

    def params(self, vclass: VocabClass, plan: PromptPlan) -> dict[str, Any]:
        """The settings a drawn set is made with: every image, batch and recording holds them."""
        s = self.settings
        return {"source": SOURCE_SD, "class": vclass.name, "prompt": plan.prompt, "phrase": plan.phrase,
                "negative_prompt": s.negative_prompt, "seed": s.seed, "reseed_per_class": s.reseed_per_class,
                "steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler, "model": self.gen.name,
                "tiny": bool(self.gen.tiny), "num_images": s.num_images, "batch_size": s.batch_size,
                "size": self.gen.image_size, "safety_checker": self.safety is not None, "models": self.models_meta}

    def sample(self, vclass: VocabClass, plan: PromptPlan, folder: Path, noise_gen: torch.Generator,
               overwrite: bool = False) -> Path:
        """Sample (or resume, or reuse) one class's support set; return its folder."""
        s = SupportSet(folder)
        settings = self.params(vclass, plan)
        record = provenance.identity({}, settings)  # a drawn set has no input files
        n, b = self.settings.num_images, self.settings.batch_size
        n_batches = math.ceil(n / b)
        with locked(folder):
            if prepare(s, settings=settings, overwrite=overwrite,
                       complete=lambda: s.crossattn_path.is_file() and s.image_indices() == list(range(n))):
                log.repeat(COMPLETE, folder)
                for k in range(n_batches):  # keep the noise sequence where a fresh run would leave it
                    torch.randn(self.gen.noise_shape(min(n, (k + 1) * b) - k * b), generator=noise_gen,
                                dtype=torch.float16)
                return folder
            self._draw(s, vclass, plan, record, noise_gen)
        return folder

    def _draw(self, s: SupportSet, vclass: VocabClass, plan: PromptPlan, record: dict[str, Any],
              noise_gen: torch.Generator) -> None:
        """Draw every batch not already on disk, then join the batches' attention.

        :func:`prepare` has checked that what is on disk was drawn with these settings.
        """
        n, b = self.settings.num_images, self.settings.batch_size
        n_batches = math.ceil(n / b)
        replaced = 0
        for k in log.progress(range(n_batches), desc=f"sample {vclass.name}", unit="batch"):
            idx = list(range(k * b, min(n, (k + 1) * b)))
            noise = torch.randn(self.gen.noise_shape(len(idx)), generator=noise_gen, dtype=torch.float16)
            if all(s.image_path(i).is_file() for i in idx) and s.partial_path(k).is_file():
                replaced += sum(bool(s.read_image(i)[1].get("replaced")) for i in idx)
                continue
            out = self.gen.generate([plan.prompt] * len(idx), self.settings.negative_prompt, noise,
                                    steps=self.settings.steps, guidance=self.settings.guidance,
                                    record_positions=plan.positions, scheduler=self.settings.scheduler)
            images, attn, counts = out.images, out.attention, out.counts
            flagged = self._replace_flagged(plan, images, attn, counts, k)
            replaced += len(flagged)
            for j, (i, rgb) in enumerate(zip(idx, to_uint8(images))):
                s.write_image(i, rgb, {**record, "index": i, "replaced": j in flagged})
            s.write_partial(k, AttentionBatch(attn, counts, torch.tensor(idx), record))
        self._join(s, plan, record, n_batches, replaced)

    def _replace_flagged(self, plan: PromptPlan, images: torch.Tensor, attn: torch.Tensor, counts: torch.Tensor,
                         batch: int) -> set[int]:
        """Redraw, in place, every image the safety checker flags; return their batch positions.

        Redraws take their noise from a generator of their own, seeded from the seed and the
        batch index, so the main noise sequence is untouched and a resumed run redraws alike.
        """
        if self.safety is None:
            return set()
        flagged = {j for j, f in enumerate(self.safety.flags(images)) if f}
        replacement_gen = torch.Generator("cpu").manual_seed(self.settings.seed * 100_003 + batch + 1)
        for j in sorted(flagged):
            for _attempt in range(MAX_REPLACEMENTS):
                noise = torch.randn(self.gen.noise_shape(1), generator=replacement_gen, dtype=torch.float16)
                out = self.gen.generate([plan.prompt], self.settings.negative_prompt, noise,
                                        steps=self.settings.steps, guidance=self.settings.guidance,
                                        record_positions=plan.positions, scheduler=self.settings.scheduler)
                if not self.safety.flags(out.images)[0]:
                    images[j], attn[j], counts[j] = out.images[0], out.attention[0], out.counts[0]
                    break
            else:
                raise BadInput(f"the safety checker flagged {MAX_REPLACEMENTS} redraws of one image of "
                               f"{plan.prompt!r}", "change the class prompt")
        return flagged

    def _join(self, s: SupportSet, plan: PromptPlan, params: dict[str, Any], n_batches: int, replaced: int) -> None:
        parts = [s.read_partial(k) for k in range(n_batches)]
        attn = torch.cat([p.attn for p in parts])
        counts = torch.cat([p.counts for p in parts])
        meta = {**params, "replaced": replaced}
        s.write_crossattn(CrossAttention(attn, counts, torch.tensor(plan.positions), torch.tensor(plan.phrase_positions),
                                         plan.tokens, tuple(self.gen.layer_names()), meta))
        for k in range(n_batches):
            s.partial_path(k).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            s.partial_dir.rmdir()


def prepare(s: SupportSet, *, settings: dict[str, Any], overwrite: bool, complete: Callable[[], bool]) -> bool:
    """Check a support set before it is made in ``s``: True when it is there, complete, to reuse.

    Call it holding the folder's lock. A folder holding a file ovdiff did not write is refused
    (even with ``overwrite``, which otherwise clears the set: nothing is deleted unless every
    file is ovdiff's). Images, batches and the recording made with other settings are refused
    with a fix (:func:`provenance.compare`); those that match are kept, and ``complete`` says
    whether anything is left to make.
    """
    found = s.written_files()
    if overwrite:
        s.clear()
        return False
    for path, meta in found.items():
        if path.parent == s.partial_dir:
            record = meta.get("params")
        elif path.parent == s.images_dir or path == s.crossattn_path:
            record = meta
        else:
            continue  # attribution, masks, overlays: the later stages' outputs, checked by them
        if not isinstance(record, dict):
            raise BadFile(path, "lacks the settings it was made with", fix=provenance.conflict_fix("sample"))
        # A set has no input files (a drawn one none, one from images records its sources as a
        # setting), so nothing is ever stale here: other settings are refused, the rest is kept.
        provenance.compare(s.path, record, stage="sample", inputs={}, settings=settings)
    return complete()


@log.stage()
def sample(classes: Sequence[VocabClass], *, out: Path, preset: str, device: torch.device, dtype: torch.dtype,
           settings: SampleSettings, shard: Shard = Shard(), overwrite: bool = False, safety_checker: bool = False,
           free_prompt: str | None = None) -> list[Path]:
    """Sample a support set for each class of this shard into ``out/<slug>``; return the folders.

    ``safety_checker``: redraw what SD's safety checker flags (docs/method.md §1: off, as the official
    pipeline; ``None`` means on when the preset has one and its weights are cached).
    """
    if free_prompt is not None and len(classes) != 1:
        raise BadInput("--prompt draws one class only", "give exactly one word with --prompt")
    mine = shard.select(list(classes))
    if not mine:
        log.logger.info("shard %s has no classes", shard)
        return []
    check_writable(out)
    for c in mine:  # a folder of the user's own photos is refused before any model loads
        SupportSet(out / c.slug).written_files()
    p = registry.get_preset(preset)
    gen = as_generator(registry.load(p, "generator", device, dtype))
    if not isinstance(gen, Generator):
        raise ModelUnavailable(f"{preset} generator", "the registry", "its object does not implement Generator")
    safety = _safety(p, device, dtype, safety_checker)
    plans = [plan_prompt(gen, c, settings.template, free_prompt) for c in mine]  # fail before any drawing
    sampler = ClassSampler(gen, settings, p.describe(), safety)
    folders = []
    with deterministic_mode():
        noise_gen = seed_everything(settings.seed)
        for vclass, plan in zip(mine, plans):
            if settings.reseed_per_class:
                noise_gen = seed_everything(settings.seed)
            folders.append(sampler.sample(vclass, plan, out / vclass.slug, noise_gen=noise_gen, overwrite=overwrite))
    return folders


@log.stage()
def from_images(vclass: VocabClass, photos: Sequence[Path], *, out: Path, preset: str, device: torch.device,
                dtype: torch.dtype, overwrite: bool = False) -> Path:
    """Build ``out/<slug>`` from a user's images instead of drawing it; return the folder.

    Each photo is decoded to 8-bit RGB (docs/method.md §7.1, with its EXIF orientation applied) and
    squashed (LANCZOS, aspect ratio ignored) to the preset generator's square size, as docs/method.md
    §4.2 says of user-supplied support images, then written as ``images/00000.png``… in the
    order given, with the class, its phrase and each source's name and SHA-256. The sources'
    digests, in order, are a setting of the set, not an input: other photos into a folder that
    holds a set are an error (a set is what its photos are), the same photos reuse it.
    """
    if not photos:
        raise BadInput("--from-images needs at least one image", "give CLASS then the image files")
    digests = [file_sha256(p) for p in photos]  # every photo readable before anything is written
    check_writable(out)
    s = SupportSet(out / vclass.slug)
    s.written_files()  # a folder of the user's own photos is refused before any model loads
    p = registry.get_preset(preset)
    gen = as_generator(registry.load(p, "generator", device, dtype))
    size = int(gen.image_size)
    settings = {"source": SOURCE_IMAGES, "class": vclass.name, "phrase": vclass.prompt, "size": size,
                "sources": digests, "models": p.describe(), "tiny": bool(getattr(gen, "tiny", False))}
    with locked(s.path):
        # overwrite=False here: the photos may lie in the folder --overwrite clears, so they are
        # decoded before anything there is removed.
        if not overwrite and prepare(s, settings=settings, overwrite=False,
                                     complete=lambda: s.image_indices() == list(range(len(photos)))):
            log.repeat(COMPLETE, s.path)
            return s.path
        pictures = [squash_image(p, size) for p in log.progress(photos, desc=f"sample {vclass.name}", unit="img")]
        if overwrite:
            s.clear()
        record = provenance.identity({}, settings)
        for i, (photo, digest, (rgb, note)) in enumerate(zip(photos, digests, pictures)):
            s.write_image(i, rgb, {**record, "index": i, "source_name": photo.name, "source_sha256": digest,
                                   "converted": note})
    return s.path


def squash_image(path: Path, size: int) -> tuple[np.ndarray, str | None]:
    """Any image as uint8 RGB [size, size, 3] (docs/method.md §7.1 decoding, then squashed with LANCZOS),
    with a note of what was converted (None when it already was size × size RGB)."""
    from PIL import Image

    rgb, note = read_rgb(path)
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb, note
    squashed = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
    return squashed, "; ".join(filter(None, [note, f"{w}x{h} squashed to {size}x{size}"]))


def _safety(p: registry.Preset, device: torch.device, dtype: torch.dtype, wanted: bool | None) -> SafetyFilter | None:
    """The preset's safety checker: required when ``wanted``, used when available when None."""
    if wanted is False:
        return None
    if "safety_checker" not in p.slots:
        if wanted:
            raise BadInput(f"preset {p.name!r} has no safety checker", "drop --safety-checker")
        return None
    try:
        return SafetyFilter(registry.load(p, "safety_checker", device, dtype))
    except ModelUnavailable as e:
        if wanted:
            raise ModelUnavailable(e.model, e.where, f"{e.fix}; or pass --no-safety-checker") from None
        log.warn_once("safety-checker", f"the safety checker is not available (looked in {e.where}); sampling "
                      "without it. `ovdiff models download` fetches it; --no-safety-checker silences this")
        return None
