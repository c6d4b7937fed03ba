"""prototype: foreground and background prototypes of each class, per extractor (docs/method.md §4).

Per extractor (loaded once), per support set: the support images' dense features, batched; the
masks brought to the feature grid; per image with foreground on that grid, its fg and bg pixels
pooled; then the class prototype, one instance prototype per image and K k-means parts per side.
One file ``<out>/<slug>.<extractor>.safetensors`` per class and extractor.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli import log
from ovdiff_cli.core.prototypes import Pool, Prototypes, build_side, grid_masks
from ovdiff_cli.core.settings import DEFAULT_EXTRACTORS, PROTOTYPE_SETTINGS_BEFORE, PrototypeSettings
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.prototypes import PROTOTYPES, prototype_path, write_prototypes
from ovdiff_cli.formats.supportset import BACKGROUND, FOREGROUND, SupportSet
from ovdiff_cli.formats.vocabulary import slugify
from ovdiff_cli.models import registry
from ovdiff_cli.models.extractor_build import FeatureOptions, build_extractor
from ovdiff_cli.models.extractors import is_variant_slot
from ovdiff_cli.models.interfaces import FeatureExtractor
from ovdiff_cli.shard import Shard
from ovdiff_cli.stages.support import check_writable, load_images, seed_everything


@dataclass(frozen=True)
class FewParts:
    """One side of one prototype file that got fewer k-means parts than asked for."""

    name: str
    extractor: str
    side: str
    parts: int
    clusters: int


def _few_parts_one(items: list[FewParts]) -> str:
    f = items[0]
    return (f"{f.name} ({f.extractor}): the {f.side} pixels hold only {f.parts} distinct vectors, so {f.parts} "
            f"parts instead of {f.clusters}")


def _few_parts(items: list[FewParts]) -> str:
    """One line for every side that got fewer parts in a stage (one file per class and extractor)."""
    if len(items) == 1:
        return _few_parts_one(items)
    files = len({(f.name, f.extractor) for f in items})
    sides = " or ".join(side for side in ("fg", "bg") if any(f.side == side for f in items))
    fewest = min(items, key=lambda f: f.parts)
    asked = " or ".join(str(c) for c in sorted({f.clusters for f in items}))
    counted = f"{files} prototype file had" if files == 1 else f"{files} prototype files had"
    return (f"{counted} fewer distinct {sides} vectors than {asked} parts, so fewer parts (fewest: {fewest.parts}, "
            f"{fewest.name} {fewest.side} with {fewest.extractor})")


FEW_PARTS = log.Repeated(_few_parts)
REUSED = log.Repeated(lambda paths: log.counted(
    paths, "{item}: exists, made the same way from the same images and masks; reused",
    "{n} prototype files exist, made the same way from the same images and masks; reused (first: {first})"))


def class_slug(name: str) -> str:
    """The file-name part of a class: its slug (only letters, digits and ``-``, so a class name read
    from a support set's metadata never leads outside -o), or a digest of a name without letters."""
    return slugify(name) or f"class-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _support_digest(s: SupportSet, indices: Sequence[int]) -> str:
    """One SHA-256 over the images and masks a prototype file was pooled from."""
    h = hashlib.sha256()
    for i in indices:
        h.update(file_sha256(s.image_path(i)).encode())
        h.update(file_sha256(s.mask_path(i)).encode())
    return h.hexdigest()


def _read_masks(s: SupportSet, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, Counter]:
    """fg and bg [N, S, S] bool of a set, and how many masks each mode made."""
    missing = [i for i in indices if not s.mask_path(i).is_file()]
    if missing:
        raise BadFile(s.mask_path(missing[0]), f"does not exist ({len(missing)} of {len(indices)} masks missing)",
                      fix="make the masks with `ovdiff mask`")
    fg, bg, modes = [], [], Counter()
    for i in indices:
        m, meta = s.read_mask(i)
        t = torch.from_numpy(m)
        fg.append(t == FOREGROUND)
        bg.append(t == BACKGROUND)
        modes[str(meta.get("mode", "unknown"))] += 1
    sizes = {tuple(t.shape) for t in fg}
    if len(sizes) != 1 or len(next(iter(sizes))) != 2 or len(set(next(iter(sizes)))) != 1:
        raise BadFile(s.masks_dir, f"holds masks of sizes {sorted(sizes)}; they must be square and alike",
                      fix="rerun `ovdiff mask --overwrite`")
    return torch.stack(fg), torch.stack(bg), modes


@dataclass(frozen=True)
class SetInputs:
    """What every extractor needs of one support set, read once: image indices, fg and bg masks
    [N, S, S], the mask modes, the class name and the digest of the images and masks."""

    indices: list[int]
    fg: torch.Tensor
    bg: torch.Tensor
    modes: Counter
    name: str
    digest: str

    @classmethod
    def read(cls, s: SupportSet) -> SetInputs:
        indices = s.image_indices()
        fg, bg, modes = _read_masks(s, indices)
        name = str(s.read_image(indices[0])[1].get("class") or s.path.name)
        return cls(indices, fg, bg, modes, name, _support_digest(s, indices))


class ClassPrototyper:
    """Prototypes of one support set for one extractor.

    ``settings.kmeans`` must be decided (:meth:`PrototypeSettings.resolved`): the file records it.
    """

    def __init__(self, extractor: FeatureExtractor, models_meta: dict[str, Any], settings: PrototypeSettings,
                 batch_size: int, overwrite: bool) -> None:
        if settings.kmeans == "auto":
            raise ValueError("ClassPrototyper needs settings.resolved(device type), not kmeans='auto'")
        self.extractor = extractor
        self.models_meta = models_meta
        self.settings = settings
        self.batch_size = batch_size
        self.overwrite = overwrite

    def identity(self, inputs: SetInputs) -> tuple[dict[str, str], dict[str, Any]]:
        """(inputs, settings) of a prototype file, as provenance compares them.

        The batch size is in neither: it changes the order of floating-point sums only, so other
        batch sizes agree within 1e-5 and a rerun with another batch size reuses the file.
        """
        settings = {"class": inputs.name, "features": self.extractor.settings(), "settings": self.settings.to_meta(),
                    "models": self.models_meta}
        return {"support_sha256": inputs.digest}, settings

    def run(self, s: SupportSet, inputs: SetInputs, out: Path) -> Path:
        path = prototype_path(out, class_slug(inputs.name), self.extractor.name)
        digests, settings = self.identity(inputs)
        with locked(path):  # a second process waits here, then reuses what the first wrote
            if provenance.decide(path, PROTOTYPES.id, stage="prototype", inputs=digests, settings=settings,
                                 overwrite=self.overwrite, assumed={"settings": PROTOTYPE_SETTINGS_BEFORE}):
                log.repeat(REUSED, path)
                return path
            return self._make(s, inputs, path, provenance.identity(digests, settings))

    def _make(self, s: SupportSet, inputs: SetInputs, path: Path, wanted: dict[str, Any]) -> Path:
        indices, fg, bg, modes, name = inputs.indices, inputs.fg, inputs.bg, inputs.modes, inputs.name
        seed_everything(self.settings.seed)
        pools, grid = self._pool(s, indices, fg, bg)
        if not len(pools["fg"]):
            raise BadInput(f"class {name!r}: no support image has foreground on the {self.extractor.name} grid",
                           "resample the class with another --seed or a larger -n, or check its masks")
        sides = {k: build_side(p, self.settings) for k, p in pools.items()}
        if sides["bg"].class_proto.shape[0] == 0:
            log.logger.warning("class %r has no background pixels on the %s grid; it contributes no "
                               "background prototypes (check its masks with `ovdiff mask --overlay`, or "
                               "resample it)", name, self.extractor.name)
        # "support" is where explain reads the support set back; it is a read path, never written
        meta = {**wanted, "class": name, "extractor": self.extractor.name, "support": str(s.path),
                "grid": list(grid), "images": len(indices),
                "images_used": {k: len(p) for k, p in pools.items()},
                "parts": {k: int(v.part.shape[0]) for k, v in sides.items()},
                "pixels": {k: int(v.pooled_index.shape[0]) for k, v in sides.items()},
                "mask_modes": dict(sorted(modes.items()))}
        for side, k in meta["parts"].items():
            if 0 < k < self.settings.clusters:
                few = FewParts(name, self.extractor.name, side, k, self.settings.clusters)
                log.repeat(FEW_PARTS, few, detail=_few_parts_one([few]))
        return write_prototypes(path, Prototypes(sides["fg"], sides["bg"], meta))

    def _pool(self, s: SupportSet, indices: Sequence[int], fg: torch.Tensor,
              bg: torch.Tensor) -> tuple[dict[str, Pool], tuple[int, int]]:
        size = int(fg.shape[-1])
        pools = {"fg": Pool(self.extractor.dim), "bg": Pool(self.extractor.dim)}
        grid = (0, 0)
        batches = [list(range(k, min(k + self.batch_size, len(indices)))) for k in range(0, len(indices), self.batch_size)]
        for batch in log.progress(batches, desc=f"prototype {s.path.name} {self.extractor.name}",
                                  unit="batch"):
            feats = self.extractor.features(load_images(s, [indices[k] for k in batch], size))
            if feats.shape[1] != self.extractor.dim:
                raise ModelUnavailable(self.extractor.name, "its output", f"returned {feats.shape[1]} channels, "
                                       f"declared {self.extractor.dim}")
            grid = tuple(feats.shape[-2:])
            # pooled where the features are: only the prototypes go back to the CPU (docs/method.md §4.2)
            gfg = grid_masks(fg[batch], *grid).to(feats.device)
            gbg = grid_masks(bg[batch], *grid).to(feats.device)
            for j, k in enumerate(batch):
                if bool(gfg[j].any()):  # an image without foreground on the grid gives neither side
                    pools["fg"].add(indices[k], feats[j], gfg[j])
                    pools["bg"].add(indices[k], feats[j], gbg[j])
        return pools, grid


@log.stage()
def prototype(folders: Sequence[Path], *, extractors: Sequence[str] = DEFAULT_EXTRACTORS,
              out: Path = Path("prototypes"), preset: str = "paper", device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, vit_dtype: torch.dtype | None = None,
              settings: PrototypeSettings = PrototypeSettings(), batch_size: int = 8, overwrite: bool = False,
              features: FeatureOptions = FeatureOptions(), shard: Shard = Shard()) -> list[Path]:
    """Write ``out/<slug>.<extractor>.safetensors`` for every support set of this shard and every
    extractor; return the files.

    ``settings.kmeans`` ``auto`` becomes the torch k-means on an accelerator ``device`` and
    scikit-learn's on the CPU (docs/method.md §4.2); the file records which ran.

    ``dtype`` is SD's precision, ``vit_dtype`` (default: the same) the ViTs'; ``features``: how the
    extractors read (SD layers and timestep, CLIP normalisation and read-out, the MAE variant).
    """
    settings = settings.resolved(torch.device(device).type)
    p = registry.get_preset(preset)
    offered = sorted(k.split(".", 1)[1] for k in p.slots if k.startswith("extractor.") and not is_variant_slot(k))
    unknown = [e for e in extractors if features.slot(e) not in p.slots]
    if unknown:
        raise BadInput(f"preset {p.name!r} has no extractor {unknown[0]!r}", f"choose from {', '.join(offered)}")
    mine = shard.select(list(folders))
    if not mine:
        log.logger.info("shard %s has no support sets", shard)
        return []
    sets = [SupportSet.open(f) for f in mine]
    inputs = [SetInputs.read(s) for s in sets]  # every folder checked, once, before any model loads
    check_writable(out)
    written = []
    for name in dict.fromkeys(extractors):
        extractor = build_extractor(p, name, options=features, device=device, dtype=dtype, vit_dtype=vit_dtype)
        _check_file_name(extractor, features.slot(name))
        worker = ClassPrototyper(extractor, p.describe(), settings, batch_size, overwrite)
        written += [worker.run(s, i, out) for s, i in zip(sets, inputs)]
    return written


def _check_file_name(extractor: FeatureExtractor, slot: str) -> None:
    """The extractor's name becomes part of file names, here and in filter-stuff's banks."""
    try:
        provenance.safe_name(extractor.name, slot, "extractor")
    except BadFile:
        raise BadInput(f"the {slot} extractor calls itself {str(extractor.name)[:40]!r}, which cannot be "
                       "part of a file name",
                       "name it with up to 64 letters, digits, _, + and - in its plugin") from None
