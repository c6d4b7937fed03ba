"""attribute: attribution maps of a support set (docs/method.md §2).

From the recorded cross-attention when the folder has it. Otherwise, with ``renoise``, by
encoding each image, noising it at a few timesteps and recording the UNet's attention to the
prompt: this works for any images, generated or not, but has no counterpart in the paper and no
reference numbers, so its outputs say ``"source": "renoise"``.

Re-noising timesteps (``core.settings.RENOISE_TIMESTEPS`` = 100, 250, 400, 550, 700 of 1000):
evenly spread over the part of the schedule where the noisy latent still shows the image's
layout. Past about t = 700, √ᾱ falls below 0.5 and the attention reflects the prompt more than
the picture; below t = 100 the UNet sees an almost clean latent and attends to textures. Five
passes cost about a sixth of sampling one image with 30 guided steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli import log
from ovdiff_cli.core import tokens as tok
from ovdiff_cli.core.attention import Attribution, attribution_maps, raw_attribution
from ovdiff_cli.core.settings import RENOISE_TIMESTEPS, TEMPLATE, AttributeSettings
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.supportset import ATTRIBUTION, SupportSet
from ovdiff_cli.models import registry
from ovdiff_cli.models.generator import as_generator
from ovdiff_cli.models.interfaces import ImageAttender
from ovdiff_cli.stages.support import load_images

#: Seed of the re-noising generator (the method's test-time seed, docs/method.md §12 R9).
RENOISE_SEED = 43
EXISTS = log.Repeated(lambda paths: log.counted(paths, "{item}: attribution exists, skipped",
                                                "{n} support sets have their attribution, skipped (first: {first})"))


def _reusable(s: SupportSet, inputs: dict[str, Any], settings: dict[str, Any], overwrite: bool) -> bool:
    """The one reuse rule (:mod:`ovdiff_cli.formats.provenance`) for ``attribution.safetensors``."""
    if provenance.decide(s.attribution_path, ATTRIBUTION.id, stage="attribute", inputs=inputs, settings=settings,
                         overwrite=overwrite):
        log.repeat(EXISTS, s.path)
        return True
    return False


def from_recording(s: SupportSet, *, phrase: str | None, settings: AttributeSettings, overwrite: bool) -> Path:
    """Attribution from ``crossattn.safetensors``: the class phrase's tokens, or ``phrase``'s."""
    rec = s.read_crossattn()
    n_images = len(s.image_indices())
    if rec.attn.shape[0] != n_images:
        raise BadFile(s.crossattn_path, f"holds {rec.attn.shape[0]} images, the folder {n_images}", "ovdiff sample")
    if max(settings.layers) >= rec.attn.shape[1]:
        raise BadInput(f"--attn-layers: the recording has {rec.attn.shape[1]} layers (0..{rec.attn.shape[1] - 1})")
    recorded = rec.positions.tolist()
    if phrase is None:
        index = [recorded.index(p) for p in rec.phrase_positions.tolist()]
    else:
        try:
            index = tok.locate_words(rec.tokens, phrase)
        except ValueError as e:
            raise BadInput(f"--phrase {phrase!r}: {e} {rec.meta.get('prompt', '')!r}",
                           "give words of the prompt") from None
    positions = [recorded[i] for i in index]
    # The recording holds the images' attention, so its digest stands for the whole set.
    inputs = {s.crossattn_path.name: file_sha256(s.crossattn_path)}
    wanted = {"source": "recorded", "positions": positions, "settings": settings.to_meta(),
              "models": rec.meta.get("models", {})}
    if _reusable(s, inputs, wanted, overwrite):
        return s.attribution_path
    size = int(s.read_image(s.image_indices()[0])[0].shape[0])
    a64, a = attribution_maps(raw_attribution(rec.attn, rec.counts, index, settings.layers), size, settings.eps)
    meta = {**provenance.identity(inputs, wanted), "class": rec.meta.get("class", s.path.name),
            "phrase": phrase or rec.meta.get("phrase"), "tokens": [rec.tokens[i] for i in index], "reference": True}
    s.write_attribution(Attribution(a, a64, meta))
    return s.attribution_path


def by_renoising(s: SupportSet, attender: ImageAttender, *, models_meta: dict[str, Any], phrase: str | None,
                 template: str, settings: AttributeSettings, batch_size: int, overwrite: bool) -> Path:
    """Attribution of any images by re-noising them through the diffusion model (see the module doc)."""
    first_meta = s.class_meta()
    phrase = phrase or first_meta.get("phrase") or s.path.name.replace("-", " ").replace("_", " ")
    try:
        before, after = tok.split_template(template)
    except ValueError as e:
        raise BadInput(f"--template: {e}", 'write e.g. --template "A good picture of a {}"') from None
    prompt = f"{before}{phrase}{after}"
    tokens = attender.tokens(prompt)
    if len(tokens) > tok.MAX_TEXT_TOKENS:
        raise BadInput(f"{s.path}: the prompt {prompt!r} has {len(tokens)} tokens, at most {tok.MAX_TEXT_TOKENS} fit",
                       "use a shorter --phrase")
    try:
        positions = tok.phrase_positions(tokens, attender.tokens(before) if before.strip() else [],
                                         attender.tokens(phrase))
    except ValueError as e:
        raise BadInput(f"{s.path}: --phrase {phrase!r} in --template {template!r}: {e}",
                       "give a phrase with words, and a template it stays whole in") from None
    images = load_images(s, s.image_indices(), attender.image_size)
    inputs = {s.image_path(i).name: file_sha256(s.image_path(i)) for i in s.image_indices()}
    wanted = {"source": "renoise", "positions": positions, "settings": settings.to_meta(), "prompt": prompt,
              "timesteps": list(RENOISE_TIMESTEPS), "models": models_meta}
    if _reusable(s, inputs, wanted, overwrite):
        return s.attribution_path
    attn, counts = [], []
    for start in log.progress(range(0, len(images), batch_size), desc=f"attribute {s.path.name}", unit="batch"):
        a, c = attender.attend(images[start : start + batch_size], prompt, RENOISE_TIMESTEPS, positions,
                               RENOISE_SEED + start)
        attn.append(a)
        counts.append(c)
    index = list(range(len(positions)))
    raw = raw_attribution(torch.cat(attn), torch.cat(counts), index, settings.layers)
    a64, a = attribution_maps(raw, attender.image_size, settings.eps)
    meta = {**provenance.identity(inputs, wanted), "class": first_meta.get("class", phrase), "phrase": phrase,
            "tokens": [tokens[p - 1] for p in positions], "reference": False}
    s.write_attribution(Attribution(a, a64, meta))
    return s.attribution_path


@log.stage()
def attribute(folders: Sequence[Path], *, phrase: str | None = None, settings: AttributeSettings = AttributeSettings(),
              overwrite: bool = False, renoise: bool = False, preset: str = "paper",
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, template: str = TEMPLATE,
              batch_size: int = 8) -> list[Path]:
    """Write ``attribution.safetensors`` in each support-set folder; return the files."""
    sets = [SupportSet.open(f) for f in folders]  # every folder checked before any work
    missing = [s for s in sets if not s.crossattn_path.is_file()]
    if missing and not renoise:
        raise BadFile(missing[0].crossattn_path, "does not exist (no recorded attention)",
                      fix="record it with `ovdiff sample`, or pass --renoise to attribute existing images")
    attender: ImageAttender | None = None
    models_meta: dict[str, Any] = {}
    out = []
    for s in sets:
        if renoise and attender is None:
            p = registry.get_preset(preset)
            attender = as_generator(registry.load(p, "generator", device, dtype))
            if not isinstance(attender, ImageAttender):
                raise BadInput(f"preset {preset!r}'s generator cannot attend to existing images",
                               "drop --renoise and sample the images")
            models_meta = p.describe()
        with locked(s.path):  # never while `sample` or another `attribute` writes this set
            if attender is not None:
                out.append(by_renoising(s, attender, models_meta=models_meta, phrase=phrase, template=template,
                                        settings=settings, batch_size=batch_size, overwrite=overwrite))
            else:
                out.append(from_recording(s, phrase=phrase, settings=settings, overwrite=overwrite))
    return out
