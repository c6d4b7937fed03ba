"""segment: label every pixel of test images by its nearest prototype (docs/method.md §7, §9).

Per image: resize to short side 448 (LANCZOS); windows of 448 and 336 at stride 224 plus the
whole image; per extractor and window, cosine similarity to every bank row, the max per active
class and over the active classes' background rows; the plain mean over the (extractor, window)
pairs covering each pixel; optional PAMR; back to the original size; floor and argmax.

Windows are batched per extractor across a group of images (windows of equal prepared size go
through the network together); banks are loaded once per run.

Reruns follow the one provenance rule (formats/provenance.py). Each label map and each side file
(overlay, scores, explanation) records its inputs, as content digests: the image's and the
banks' (and, with --candidates, the image's active classes); and the settings: vocabulary,
segment settings, pre-filter, models. An image is segmented again when one of the outputs asked
for is missing or stale; other settings are an error; a file ovdiff did not make, or an input,
where an output goes is refused even with --overwrite. Every output of the shard is checked
before any model loads, so a refusal writes nothing; and no two outputs may share a path (two
images named alike, or ``a.png``'s overlay and ``a.overlay.png``'s label map).

Locks: one per image, on its label map (``.<stem>.png.lock``), covering its side files too. A
group of images (--images-per-batch) takes its images' locks in sorted order, so two processes
locking overlapping groups cannot deadlock; re-checks their provenance under the locks; then
segments and writes them. Per image rather than per folder, so that `--shard K/N` processes
writing different images into one folder run in parallel, while two runs over the same image
never interleave: the second waits, then reuses what the first made, or refuses (other
settings) with one line.
"""

from __future__ import annotations

import contextlib
import os
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
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.images import open_image, to_rgb8, write_rgb_png
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, OVERLAY_SCHEMA, legend, write_label_map
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.prototypes import Bank, read_bank
from ovdiff_cli.formats.segmentation import SCORES, Explanation, explain_schema, write_explanation, write_scores
from ovdiff_cli.formats.vocabulary import Vocabulary
from ovdiff_cli.models import registry
from ovdiff_cli.models.extractor_build import FeatureOptions, build_extractor
from ovdiff_cli.models.interfaces import FeatureExtractor
from ovdiff_cli.shard import Shard
from ovdiff_cli.stages.overlay import overlay_picture
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
        self.bank_files = {ex: f for ex, (f, _) in banks.items()}
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
                    x = ex.window_input(job.image[:, y0:y1, x0:x1])
                    groups.setdefault(tuple(x.shape), []).append((job, win, x))
            for items in groups.values():
                for k in range(0, len(items), self.batch_size):
                    chunk = items[k : k + self.batch_size]
                    feats = ex.features(torch.stack([x for _, _, x in chunk]))
                    for (job, win, _), f in zip(chunk, feats):
                        owners = (torch.arange(self.n, device=self.device) if self.settings.keep_inactive_bg
                                  else None)
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


def _converted(items: list[tuple[Path, str]]) -> str:
    path, note = items[0]
    if len(items) == 1:
        return f"{path}: {note}"
    return f"{len(items)} images were converted to 8-bit RGB (first: {path}: {note})"


#: A note, not a warning: the conversion is the one the method prescribes, and there is nothing to do about it.
CONVERTED = log.Repeated(_converted)


def read_image(path: Path) -> np.ndarray:
    """Any image as uint8 RGB, with a note naming the conversion (docs/method.md §7.1)."""
    rgb, note = to_rgb8(open_image(path))
    if note:
        log.repeat(CONVERTED, (path, note), detail=f"{path}: {note}")
    return rgb


REMOVED = log.Repeated(lambda paths: log.counted(
    paths, "{item}: removed, it belonged to the label map made before",
    "{n} side files removed, they belonged to the label maps made before (first: {first})"))
#: The side files segment writes beside ``<stem>.png`` on request: kind → (suffix, schema).
SIDE_FILES: dict[str, tuple[str, str]] = {
    "overlay": (".overlay.png", OVERLAY_SCHEMA),
    "scores": (".scores.safetensors", SCORES.id),
    "explain": (".explain.safetensors", explain_schema([]).id),
}


@dataclass(frozen=True)
class Outputs:
    """Where one image's results go: its label map, the side files asked for, and the others."""

    image: Path
    label_map: Path
    sides: dict[str, Path]               # kind → path, asked for now
    others: dict[str, Path]              # kind → path, not asked for (removed when stale)

    def files(self) -> list[tuple[Path, str]]:
        """(path, schema) of every output to make or reuse."""
        return [(self.label_map, LABELMAP_SCHEMA)] + [(p, SIDE_FILES[k][1]) for k, p in self.sides.items()]


def plan_outputs(images: Sequence[Path], out: Path, wanted: Sequence[str]) -> list[Outputs]:
    """The outputs of every image, refusing two that would land on one path (two images named
    alike, or ``a.png``'s overlay and ``a.overlay.png``'s label map)."""
    owner: dict[Path, str] = {}
    plans = []
    for image in images:
        paths = {"label map": out / f"{image.stem}.png",
                 **{k: out / f"{image.stem}{suffix}" for k, (suffix, _) in SIDE_FILES.items()}}
        for kind, path in paths.items():
            if kind != "label map" and kind not in wanted:
                continue
            what = f"the {kind} of {image}"
            if path in owner:
                raise BadInput(f"{path} would be both {owner[path]} and {what}",
                               "segment images whose names clash into different -o folders, or rename one")
            owner[path] = what
        plans.append(Outputs(image, paths["label map"], {k: paths[k] for k in SIDE_FILES if k in wanted},
                             {k: paths[k] for k in SIDE_FILES if k not in wanted}))
    return plans


def refuse_inputs_as_outputs(plans: Sequence[Outputs], inputs: dict[Path, str]) -> None:
    """An output path that is one of this run's input files (``segment photos/*.png -o photos``)
    is refused by name, with or without ``--overwrite``."""
    ids: dict[tuple[int, int], tuple[Path, str]] = {}
    for path, role in inputs.items():
        with contextlib.suppress(OSError):
            st = os.stat(path)
            ids[(st.st_dev, st.st_ino)] = (path, role)
    for plan in plans:
        for path, _ in plan.files():
            try:
                st = os.stat(path)
            except OSError:
                continue
            hit = ids.get((st.st_dev, st.st_ino))
            if hit is not None:
                same = "" if Path(os.path.abspath(hit[0])) == Path(os.path.abspath(path)) else f" ({hit[0]})"
                raise BadFile(path, f"is an input of this run, {hit[1]}{same}, and where an output would go, so "
                                    "ovdiff will not write it (not even with --overwrite)",
                              fix="choose an -o folder that holds no input")


def extractor_options(banks: dict[str, tuple[Path, Bank]], preset: registry.Preset) -> dict[str, FeatureOptions]:
    """How to rebuild each bank's extractor, from the features it stored (an error names a bank
    whose extractor the preset lacks)."""
    options = {}
    for name in sorted(banks):
        opts = FeatureOptions.stored(name, banks[name][1].meta.get("features") or {})
        if opts.slot(name) not in preset.slots:
            raise BadFile(banks[name][0], f"is a bank of the extractor {name!r}, which preset {preset.name!r} lacks",
                          fix="segment with the --models preset the prototypes came from")
        options[name] = opts
    return options


@dataclass(frozen=True)
class Prefilter:
    """Where each image's active classes come from, known before any model loads."""

    active: list[list[str]] | None       # per image, from --candidates; None: all, or classify in-process
    scorer: list[str | None]             # per image, the CLIP model that chose them (None: none, or unknown)


def candidate_actives(images: Sequence[Path], digests: Sequence[str], vocab: Vocabulary, *, candidates: Path | None,
                      prefilter: bool, preset: registry.Preset) -> Prefilter:
    """The active classes of each image from the candidates file, checked against the images."""
    if not prefilter:
        return Prefilter(None, [None] * len(images))
    if candidates is None:
        scorer = preset.slots.get("scorer")
        return Prefilter(None, [scorer.key if scorer else None] * len(images))
    by_image = {r.image: r for r in read_candidates(candidates)}
    missing = [str(p) for p in images if str(p) not in by_image]
    if missing:
        raise BadFile(candidates, f"has no record of {missing[0]}" + (f" and {len(missing) - 1} more images"
                                                                      if len(missing) > 1 else ""),
                      fix="run `ovdiff classify` on the same images, or pass --no-prefilter")
    records = [by_image[str(p)] for p in images]
    scorers: list[str | None] = []
    for r, digest in zip(records, digests):
        unknown = [a for a in r.active if a not in vocab.names]
        if unknown:
            raise BadFile(candidates, f"names class {unknown[0]!r}, not in the banks' vocabulary",
                          fix="classify with the banks' vocabulary")
        inputs, settings = r.extra.get("inputs"), r.extra.get("settings")
        recorded = inputs.get("image_sha256") if isinstance(inputs, dict) else None
        if recorded is not None and recorded != digest:
            raise BadFile(candidates, f"was made from another version of {r.image} (its content changed since)",
                          fix="run `ovdiff classify` on it again, or pass --no-prefilter")
        model = settings.get("model") if isinstance(settings, dict) else None
        scorers.append(model if isinstance(model, str) else None)
    return Prefilter([list(r.active) for r in records], scorers)


def active_masks(images: Sequence[Path], vocab: Vocabulary, pre: Prefilter, *, prefilter: bool,
                 classify_kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """bool [C+1] per image: the classes segment may use (index 0, background, always set)."""
    n = len(vocab) + 1
    if not prefilter:
        return [torch.ones(n, dtype=torch.bool) for _ in images]
    if pre.active is not None:
        actives = pre.active
    else:
        from ovdiff_cli.stages.classify import classify

        actives = [r.active for r in classify(images, vocab, **classify_kwargs)]
    out = []
    for active in actives:
        m = torch.zeros(n, dtype=torch.bool)
        m[0] = True
        for a in active:
            m[vocab.label_of(a)] = True
        out.append(m)
    return out


@dataclass(frozen=True)
class SideOutputs:
    """The side files written beside each label map on request (--overlay, --save-scores, --explain)."""

    overlay: bool = False
    scores: bool = False
    explain: bool = False

    def wanted(self) -> list[str]:
        """The kinds of :data:`SIDE_FILES` asked for."""
        return [k for k, on in (("overlay", self.overlay), ("scores", self.scores), ("explain", self.explain)) if on]


@log.stage()
def segment(images: Sequence[Path], bank_paths: Sequence[Path], *, out: Path, preset: str = "paper",
            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
            vit_dtype: torch.dtype | None = None, settings: SegmentSettings = SegmentSettings(),
            candidates: Path | None = None, prefilter: bool = True, batch_size: int = 8, images_per_batch: int = 2,
            shard: Shard = Shard(), overwrite: bool = False, sides: SideOutputs = SideOutputs(),
            expected_classes: Sequence[str] | None = None) -> list[Path]:
    """Write ``out/<stem>.png`` (and the asked-for side files) for every image of this shard;
    return the label maps of this shard's images, in order.

    ``expected_classes``: the class names a dataset scores; banks of another vocabulary are an error.
    """
    device = torch.device(device)
    images = check_images(images)
    plans = plan_outputs(images, out, sides.wanted())  # all images: shards of one run must not clash either
    banks = load_vocabulary_banks(bank_paths, expected_classes)
    refuse_inputs_as_outputs(plans, {**{p: "an image" for p in images}, **{f: "a bank" for f, _ in banks.values()},
                                     **({candidates: "the candidates file"} if candidates is not None else {})})
    mine = shard.select(plans)
    check_writable(out)
    p = registry.get_preset(preset)
    features = extractor_options(banks, p)
    # Every output of this shard is checked before any model loads, so that a refusal writes nothing.
    work = plan_work(mine, banks, p, features, candidates=candidates, prefilter=prefilter, settings=settings,
                     overwrite=overwrite)
    if work.todo:
        models = {"preset": preset, "device": device, "dtype": dtype}
        actives = work.actives(prefilter=prefilter, classify_kwargs=models)
        extractors = load_extractors(banks, features, p, device=device, dtype=dtype, vit_dtype=vit_dtype)
        seg = Segmenter(banks, extractors, settings, device=device, batch_size=batch_size, explain=sides.explain)
        run_batches(seg, work, actives, images_per_batch=images_per_batch, overwrite=overwrite)
    return [plan.label_map for plan in mine]


def check_images(images: Sequence[Path]) -> list[Path]:
    """The image paths, each an existing file (else one line naming the first that is not)."""
    paths = [Path(p) for p in images]
    for p in paths:
        if not p.is_file():
            raise BadFile(p, "does not exist" if not p.exists() else "is not a file", fix="give image files")
    return paths


def load_vocabulary_banks(bank_paths: Sequence[Path],
                          expected_classes: Sequence[str] | None) -> dict[str, tuple[Path, Bank]]:
    """:func:`load_banks`, refusing banks whose classes are not ``expected_classes`` (a dataset's)."""
    banks = load_banks(bank_paths)
    f, first = next(iter(banks.values()))
    vocab = first.vocabulary
    if expected_classes is not None and list(expected_classes) != vocab.names:
        raise BadFile(f, f"holds the classes of {vocab.name}, not the dataset's ({len(expected_classes)} classes)",
                      fix="build the banks with the dataset's --vocab")
    return banks


def load_extractors(banks: dict[str, tuple[Path, Bank]], options: dict[str, FeatureOptions], p: registry.Preset, *,
                    device: torch.device, dtype: torch.dtype,
                    vit_dtype: torch.dtype | None) -> dict[str, FeatureExtractor]:
    """Each bank's extractor, built as its stored features say (and checked to give them)."""
    return {name: build_extractor(p, name, options=opts, device=device, dtype=dtype, vit_dtype=vit_dtype,
                                  source=banks[name][0])
            for name, opts in options.items()}


#: (inputs, settings) of one image's outputs, as :func:`provenance.decide` compares them.
Identity = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Work:
    """This shard's outputs, what each is made from, and the indices of those to (re)make."""

    vocab: Vocabulary
    plans: list[Outputs]
    identities: list[Identity]
    sources: Prefilter                   # where each image's active classes come from
    todo: list[int]

    def actives(self, *, prefilter: bool, classify_kwargs: dict[str, Any]) -> dict[int, torch.Tensor]:
        """bool [C+1] per image to make, by index: from the candidates, or classified now."""
        pre = self.sources
        pre_todo = Prefilter([pre.active[k] for k in self.todo] if pre.active is not None else None,
                             [pre.scorer[k] for k in self.todo])
        masks = active_masks([self.plans[k].image for k in self.todo], self.vocab, pre_todo, prefilter=prefilter,
                             classify_kwargs=classify_kwargs)
        return dict(zip(self.todo, masks))


def plan_work(mine: list[Outputs], banks: dict[str, tuple[Path, Bank]], p: registry.Preset,
              features: dict[str, FeatureOptions], *, candidates: Path | None, prefilter: bool,
              settings: SegmentSettings, overwrite: bool) -> Work:
    """The identity of every output of this shard, and which of them are to be made (the others
    exist, made from the same inputs and settings, and are reused)."""
    vocab = next(iter(banks.values()))[1].vocabulary
    digests = [file_sha256(plan.image) for plan in mine]
    pre = candidate_actives([plan.image for plan in mine], digests, vocab, candidates=candidates, prefilter=prefilter,
                            preset=p)
    common = {"vocabulary": vocab.to_meta(), "settings": settings.to_meta(), "prefilter": prefilter}
    identities = _identities(digests, {ex: file_sha256(f) for ex, (f, _) in sorted(banks.items())}, pre, common,
                             {ex: p.slots[opts.slot(ex)].key for ex, opts in features.items()})
    todo = [k for k, plan in enumerate(mine) if not _reusable(plan, *identities[k], overwrite)]
    if len(todo) < len(mine):
        log.logger.info("%d of %d label maps exist, made from the same images and settings: reused",
                        len(mine) - len(todo), len(mine))
    return Work(vocab, mine, identities, pre, todo)


def run_batches(seg: Segmenter, work: Work, actives: dict[int, torch.Tensor], *, images_per_batch: int,
                overwrite: bool) -> None:
    """Segment the images to make, ``images_per_batch`` at a time."""
    groups = [work.todo[k : k + images_per_batch] for k in range(0, len(work.todo), images_per_batch)]
    for group in log.progress(groups, desc="segment", unit="batch"):
        _segment_group(seg, [work.plans[k] for k in group], [work.identities[k] for k in group],
                       [actives[k] for k in group], work.vocab, overwrite=overwrite)


def _identities(digests: Sequence[str], bank_digests: dict[str, str], pre: Prefilter, common: dict[str, Any],
                extractors: dict[str, str]) -> list[Identity]:
    """Per image: the content digests it is made from, and the settings, pre-filter and models."""
    out = []
    for k, digest in enumerate(digests):
        inputs: dict[str, Any] = {"image_sha256": digest, "banks": bank_digests}
        if pre.active is not None:
            inputs["active"] = pre.active[k]
        out.append((inputs, {**common, "models": {"extractors": extractors, "scorer": pre.scorer[k]}}))
    return out


def _reusable(plan: Outputs, inputs: dict[str, Any], settings: dict[str, Any], overwrite: bool) -> bool:
    """True when the label map and every side file asked for can be reused as they are.

    Every output is asked (no short cut), so a file that ovdiff may not replace is refused even
    when another output of the image has to be made anyway.
    """
    reuse = [provenance.decide(path, schema, stage="segment", inputs=inputs, settings=settings, overwrite=overwrite)
             for path, schema in plan.files()]
    return all(reuse)


def _segment_group(seg: Segmenter, plans: list[Outputs], identities: list[Identity], actives: list[torch.Tensor],
                   vocab: Vocabulary, *, overwrite: bool) -> None:
    """Segment and write a group of images, holding their locks (taken in sorted order, so two
    processes locking overlapping groups cannot deadlock) and re-checking provenance under them:
    another process may have made these outputs while this one waited."""
    with contextlib.ExitStack() as stack:
        for path in sorted(plan.label_map for plan in plans):
            stack.enter_context(locked(path))
        keep = [k for k, plan in enumerate(plans) if not _reusable(plan, *identities[k], overwrite)]
        if not keep:
            return
        jobs = [seg.start(plans[k].image, read_image(plans[k].image), actives[k]) for k in keep]
        seg.run(jobs)
        for k, job in zip(keep, jobs):
            _write(plans[k], seg.finish(job, "scores" in plans[k].sides), identities[k], job, vocab, actives[k],
                   seg.bank_files)
            _remove_stale_sides(plans[k], *identities[k], overwrite)


def _write(plan: Outputs, result: Result, identity: Identity, job: ImageJob, vocab: Vocabulary,
           active: torch.Tensor, bank_files: dict[str, Path]) -> Path:
    """The side files first, the label map last: a label map means its image is done."""
    meta = {**provenance.identity(*identity), "image": str(plan.image),
            "active": [vocab.names[c - 1] for c in torch.nonzero(active).flatten().tolist() if c > 0]}
    if "scores" in plan.sides and result.scores is not None:
        write_scores(plan.sides["scores"], result.scores, meta)
    if "explain" in plan.sides and result.explanation is not None:
        e = result.explanation
        banks = {ex: {"file": str(f), "sha256": identity[0]["banks"][ex]} for ex, f in sorted(bank_files.items())}
        write_explanation(plan.sides["explain"], Explanation(e.labels, e.rows, e.similarity, {
            **meta, "banks": banks, "size": list(job.rgb.shape[:2]), "resized": list(e.labels.shape)}))
    if "overlay" in plan.sides:
        write_rgb_png(plan.sides["overlay"], overlay_picture(job.rgb, result.labels, vocab.names, active.tolist()),
                      {"schema": OVERLAY_SCHEMA, **meta})
    # the legend in the label map's own metadata: the PNG alone says which colour is which class
    return write_label_map(plan.label_map, result.labels, {"schema": LABELMAP_SCHEMA, **meta,
                                                          "legend": legend(vocab.names)})


def _remove_stale_sides(plan: Outputs, inputs: dict[str, Any], settings: dict[str, Any], overwrite: bool) -> None:
    """Side files not asked for this time that belonged to the label map just replaced (made by
    ovdiff with the same settings from other inputs, or any of ovdiff's with --overwrite) would
    now describe another image: remove them. Others (a user's file, other settings) stay."""
    for kind, path in plan.others.items():
        try:
            meta = provenance.check_replaceable(path, SIDE_FILES[kind][1], "segment")
            stale = meta is not None and not provenance.compare(path, meta, stage="segment", inputs=inputs,
                                                                settings=settings, overwrite=overwrite)
        except BadFile:
            continue  # not ovdiff's, another kind, or made with other settings: not this run's to remove
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.repeat(REMOVED, path)
