"""segment: label every pixel of test images by its nearest prototype (METHOD.md §7, §9).

Per image: resize to short side 448 (LANCZOS); windows of 448 and 336 at stride 224 plus the
whole image; per extractor and window, cosine similarity to every bank row, the max per active
class and over the active classes' background rows; the plain mean over the (extractor, window)
pairs covering each pixel; optional PAMR; back to the original size; floor and argmax.

Windows are batched per extractor across a group of images (windows of equal prepared size go
through the network together); banks are loaded once per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ovdiff_cli import log
from ovdiff_cli.core import segment as core
from ovdiff_cli.core.settings import SegmentSettings
from ovdiff_cli.core.windows import Window, resized_size, windows
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.images import open_image, to_rgb8, write_rgb_png
from ovdiff_cli.formats.labelmap import PALETTE, read_label_map_meta, write_label_map
from ovdiff_cli.formats.prototypes import Bank, read_bank
from ovdiff_cli.formats.segmentation import Explanation, write_explanation, write_scores
from ovdiff_cli.formats.vocabulary import Vocabulary
from ovdiff_cli.models import registry
from ovdiff_cli.models.extractors import as_extractor, slot_of, window_input
from ovdiff_cli.models.interfaces import FeatureExtractor
from ovdiff_cli.options import Shard
from ovdiff_cli.stages.support import check_writable


def load_banks(paths: Sequence[Path]) -> dict[str, tuple[Path, Bank]]:
    """Banks by extractor from files or folders (every ``bank.*.safetensors`` in a folder).

    All must hold the same vocabulary and agree on their background mode."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("bank.*.safetensors"))
            if not found:
                raise BadFile(p, "holds no bank.<extractor>.safetensors", fix="make banks with `ovdiff filter-stuff`")
            files += found
        else:
            files.append(p)
    banks: dict[str, tuple[Path, Bank]] = {}
    for f in files:
        b = read_bank(f)
        if b.extractor in banks:
            raise BadFile(f, f"is a second {b.extractor} bank (the first: {banks[b.extractor][0]})",
                          fix="give one bank per extractor")
        banks[b.extractor] = (f, b)
    first_path, first = next(iter(banks.values()))
    for f, b in banks.values():
        if b.vocabulary != first.vocabulary:
            raise BadFile(f, f"holds the vocabulary {b.vocabulary.name} ({len(b.vocabulary)} classes), "
                             f"{first_path} another", fix="give the banks of one vocabulary")
        if b.meta.get("settings", {}).get("bg_mode") != first.meta.get("settings", {}).get("bg_mode"):
            raise BadFile(f, f"has another background mode than {first_path}", fix="rebuild the banks alike")
    return banks


@dataclass
class ImageJob:
    """One image on its way through the segmenter."""

    path: Path
    rgb: np.ndarray                      # [H0, W0, 3] uint8, as decoded
    image: torch.Tensor                  # [3, H, W] in [0, 1], resized
    wins: list[Window]
    active: torch.Tensor                 # bool [C+1]
    acc: core.Accumulator
    best: dict[str, core.BestRows] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    labels: np.ndarray                   # [H0, W0] uint8
    scores: torch.Tensor | None          # [C+1, H0, W0] when asked
    explanation: Explanation | None


class Segmenter:
    """Banks and extractors on a device; segments groups of images."""

    def __init__(self, banks: dict[str, tuple[Path, Bank]], extractors: dict[str, FeatureExtractor],
                 settings: SegmentSettings, device: torch.device, batch_size: int = 8, explain: bool = False) -> None:
        self.settings = settings
        self.device = device
        self.batch_size = batch_size
        self.explain = explain
        self.extractors = extractors
        any_bank = next(iter(banks.values()))[1]
        self.vocabulary: Vocabulary = any_bank.vocabulary
        self.n = len(self.vocabulary) + 1
        self.bg_zero = any_bank.meta.get("settings", {}).get("bg_mode") == "zero"
        self.rows = {ex: (core.BankRows(b.fg.vectors.to(device), b.fg.owner.to(device)),
                          core.BankRows(b.bg.vectors.to(device), b.bg.owner.to(device)))
                     for ex, (_, b) in banks.items()}

    def start(self, path: Path, rgb: np.ndarray, active: torch.Tensor) -> ImageJob:
        h0, w0 = rgb.shape[:2]
        h, w = resized_size(h0, w0, self.settings.short_side)
        resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS))
        image = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255).to(self.device)
        crops = self.settings.crops if self.settings.sliding_window else ()
        wins = windows(h, w, crops, whole_image=self.settings.whole_image or not crops)
        job = ImageJob(path, rgb, image, wins, active.to(self.device), core.Accumulator(self.n, h, w, self.device))
        if self.explain:
            job.best = {ex: core.BestRows(self.n, h, w, self.device) for ex in self.extractors}
        return job

    def run(self, jobs: list[ImageJob]) -> None:
        """Every window of every job through every extractor, batched by prepared size."""
        for ex_name, ex in self.extractors.items():
            fg, bg = self.rows[ex_name]
            groups: dict[tuple[int, ...], list[tuple[ImageJob, Window, torch.Tensor]]] = {}
            for job in jobs:
                for win in job.wins:
                    y0, y1, x0, x1 = win
                    x = window_input(ex, job.image[:, y0:y1, x0:x1])
                    groups.setdefault(tuple(x.shape), []).append((job, win, x))
            for items in groups.values():
                for k in range(0, len(items), self.batch_size):
                    chunk = items[k : k + self.batch_size]
                    feats = ex.features(torch.stack([x for _, _, x in chunk]))
                    for (job, win, _), f in zip(chunk, feats):
                        owners = None if not self.settings.keep_inactive_bg else torch.arange(self.n, device=self.device)
                        scores, rows = core.class_scores(f.to(self.device), fg, bg, job.active, owners)
                        job.acc.add(scores, win)
                        if self.explain:
                            job.best[ex_name].add(scores, rows, win)

    def finish(self, job: ImageJob, save_scores: bool) -> Result:
        mean = job.acc.mean()
        if self.settings.pamr:
            mean = core.pamr(mean, job.image * 255, self.settings.pamr_iterations, self.settings.pamr_dilations)
        h0, w0 = job.rgb.shape[:2]
        full = core.upsample(mean, h0, w0)
        labels = core.decide(full, self.settings, self.bg_zero)
        explanation = None
        if self.explain:
            small = core.decide(mean, self.settings, self.bg_zero)
            floored = (small == 0) & ((mean[0] <= self.settings.score_floor) | self.bg_zero)
            rows, sims = {}, {}
            for ex_name, best in job.best.items():
                rows[ex_name], sims[ex_name] = best.of(small, floored)
            explanation = Explanation(small.cpu(), {k: v.cpu() for k, v in rows.items()},
                                      {k: v.cpu() for k, v in sims.items()}, {})
        if int(labels.max()) > 254:
            raise BadInput("more than 254 classes do not fit a palette label map", "use a smaller vocabulary")
        return Result(labels.to(torch.uint8).cpu().numpy(), full.cpu() if save_scores else None, explanation)


def read_image(path: Path) -> np.ndarray:
    """Any image as uint8 RGB, with a warning naming the conversion (METHOD.md §7.1)."""
    rgb, note = to_rgb8(open_image(path))
    if note:
        log.logger.warning("warning: %s: %s", path, note)
    return rgb


def overlay_picture(rgb: np.ndarray, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> np.ndarray:
    """The image with its label colours blended in and a legend of the classes present."""
    from PIL import ImageDraw

    colours = PALETTE[labels].astype(np.float32)
    blend = (rgb.astype(np.float32) * (1 - alpha) + colours * alpha).round().astype(np.uint8)
    present = [int(v) for v in np.unique(labels)]
    line = 14
    legend = Image.new("RGB", (blend.shape[1], line * len(present) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, v in enumerate(present):
        y = 3 + k * line
        draw.rectangle([4, y, 14, y + 10], fill=tuple(int(c) for c in PALETTE[v]))
        draw.text((20, y - 1), "background" if v == 0 else names[v - 1], fill=(0, 0, 0))
    return np.concatenate([blend, np.asarray(legend)], axis=0)


def active_masks(images: Sequence[Path], vocab: Vocabulary, candidates: Path | None, prefilter: bool,
                 classify_kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """bool [C+1] per image: the classes segment may use (index 0, background, always set)."""
    n = len(vocab) + 1
    if not prefilter:
        return [torch.ones(n, dtype=torch.bool) for _ in images]
    if candidates is not None:
        by_image = {r.image: r for r in read_candidates(candidates)}
        missing = [str(p) for p in images if str(p) not in by_image]
        if missing:
            raise BadFile(candidates, f"has no record of {missing[0]}" + (f" and {len(missing) - 1} more images"
                                                                          if len(missing) > 1 else ""),
                          fix="run `ovdiff classify` on the same images, or pass --no-prefilter")
        records = [by_image[str(p)] for p in images]
    else:
        from ovdiff_cli.stages.classify import classify

        records = classify(images, vocab, **classify_kwargs)
    out = []
    for r in records:
        unknown = [a for a in r.active if a not in vocab.names]
        if unknown:
            raise BadFile(candidates or Path("-"), f"names class {unknown[0]!r}, not in the banks' vocabulary",
                          fix="classify with the banks' vocabulary")
        m = torch.zeros(n, dtype=torch.bool)
        m[0] = True
        for a in r.active:
            m[vocab.label_of(a)] = True
        out.append(m)
    return out


def segment(images: Sequence[Path], bank_paths: Sequence[Path], out: Path, preset: str = "paper",
            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
            vit_dtype: torch.dtype | None = None, settings: SegmentSettings = SegmentSettings(),
            candidates: Path | None = None, prefilter: bool = True, batch_size: int = 8, images_per_batch: int = 2,
            shard: Shard = Shard(), overwrite: bool = False, overlay: bool = False, save_scores: bool = False,
            explain: bool = False, expected_classes: Sequence[str] | None = None) -> list[Path]:
    """Write ``out/<stem>.png`` (and the asked-for side files) for every image of this shard.

    ``expected_classes``: the class names a dataset scores; banks of another vocabulary are an error.
    """
    device = torch.device(device)
    stems: dict[str, Path] = {}
    for p in images:
        if not Path(p).is_file():
            raise BadFile(p, "does not exist" if not Path(p).exists() else "is not a file", fix="give image files")
        if p.stem in stems:
            raise BadInput(f"{p} and {stems[p.stem]} would both write {p.stem}.png",
                           "segment images with the same name into different -o folders")
        stems[p.stem] = p
    banks = load_banks(bank_paths)
    vocab = next(iter(banks.values()))[1].vocabulary
    if expected_classes is not None and list(expected_classes) != vocab.names:
        f = next(iter(banks.values()))[0]
        raise BadFile(f, f"holds the classes of {vocab.name}, not the dataset's ({len(expected_classes)} classes)",
                      fix="build the banks with the dataset's --vocab")
    mine = shard.select(list(images))
    check_writable(out)
    meta_base = {"vocabulary": vocab.to_meta(), "settings": settings.to_meta(), "prefilter": prefilter,
                 "banks": {ex: {"file": str(f), "sha256": file_sha256(f)} for ex, (f, _) in sorted(banks.items())}}
    wanted_sides = [suffix for suffix, on in ((".overlay.png", overlay), (".scores.safetensors", save_scores),
                                              (".explain.safetensors", explain)) if on]
    todo = [p for p in mine if overwrite or not _done(out, p.stem, meta_base, wanted_sides)]
    if len(todo) < len(mine):
        log.logger.info("%d of %d label maps exist, skipped", len(mine) - len(todo), len(mine))
    written = [out / f"{p.stem}.png" for p in mine if p not in todo]
    if not todo:
        return written
    p = registry.get_preset(preset)
    actives = active_masks(todo, vocab, candidates, prefilter,
                           {"preset": preset, "device": device, "dtype": dtype})
    extractors = {}
    for name in sorted(banks):
        features = banks[name][1].meta.get("features") or {}
        variant = "l16" if str(features.get("model", "")).startswith("mae-vitl16") else "b16"
        slot = slot_of(name, variant)
        if slot not in p.slots:
            raise BadFile(banks[name][0], f"is a bank of the extractor {name!r}, which preset {preset!r} lacks",
                          fix="segment with the --models preset the prototypes came from")
        net_dtype = dtype if name == "sd" else (vit_dtype or dtype)
        ex = as_extractor(name, registry.load(p, slot, device, net_dtype),
                          sd_layers=features.get("layers", "default"), sd_timestep=features.get("timestep", 200),
                          clip_norm=features.get("norm", "imagenet"),
                          clip_readout=features.get("readout", "keys"))
        if not isinstance(ex, FeatureExtractor):
            raise ModelUnavailable(slot, "the registry", "its object is not a FeatureExtractor")
        if features and ex.settings() != features:
            raise BadFile(banks[name][0], "was made with other feature settings or models than this preset gives "
                                          f"({preset})", fix="segment with the --models preset the prototypes came from")
        extractors[name] = ex
    seg = Segmenter(banks, extractors, settings, device, batch_size, explain)
    groups = [list(range(k, min(k + images_per_batch, len(todo)))) for k in range(0, len(todo), images_per_batch)]
    for group in log.progress(groups, desc="segment", unit="batch"):
        jobs = [seg.start(todo[i], read_image(todo[i]), actives[i]) for i in group]
        seg.run(jobs)
        for i, job in zip(group, jobs):
            written.append(_write(out, job, seg.finish(job, save_scores), {**meta_base, "image": str(todo[i]),
                                  "active": [vocab.names[c - 1] for c in torch.nonzero(actives[i]).flatten().tolist()
                                             if c > 0]}, vocab, overlay))
    return written


def _done(out: Path, stem: str, meta: dict[str, Any], side_suffixes: Sequence[str]) -> bool:
    """A label map that exists, was made the same way and has every side file asked for now; one
    made otherwise is an error. A missing side file means the image is segmented again."""
    path = out / f"{stem}.png"
    if not path.is_file():
        return False
    old = read_label_map_meta(path)
    differ = [k for k in ("vocabulary", "settings", "banks", "prefilter") if old.get(k) != meta[k]]
    if differ:
        raise BadFile(path, f"was made with other {', '.join(differ)}", fix="pass --overwrite to redo it, or choose another -o")
    return all((out / f"{stem}{suffix}").is_file() for suffix in side_suffixes)


def _write(out: Path, job: ImageJob, result: Result, meta: dict[str, Any], vocab: Vocabulary, overlay: bool) -> Path:
    stem = job.path.stem
    inputs = {"image_sha256": file_sha256(job.path)}
    if result.scores is not None:
        write_scores(out / f"{stem}.scores.safetensors", result.scores,
                     {"image": str(job.path), "vocabulary": vocab.to_meta(), "inputs": inputs})
    if result.explanation is not None:
        e = result.explanation
        write_explanation(out / f"{stem}.explain.safetensors", Explanation(
            e.labels, e.rows, e.similarity, {"image": str(job.path), "vocabulary": vocab.to_meta(),
                                             "banks": meta["banks"], "inputs": inputs,
                                             "size": list(job.rgb.shape[:2]), "resized": list(e.labels.shape)}))
    if overlay:
        write_rgb_png(out / f"{stem}.overlay.png", overlay_picture(job.rgb, result.labels, vocab.names))
    return write_label_map(out / f"{stem}.png", result.labels, {**meta, "inputs": inputs})
