"""Benchmark dataset folders as users have them on disk (docs/method.md §10.2), read by name.

Each gives its image/ground-truth pairs of the validation split, the built-in vocabulary and
its protocol. Ground truths are label maps: 0 background, i the i-th class, 255 ignore.

- ``voc``: PASCAL VOC 2012 — ``ImageSets/Segmentation/val.txt``, ``JPEGImages/<id>.jpg``,
  ``SegmentationClass/<id>.png`` (the root may be ``VOC2012``, ``VOCdevkit`` or their parent).
- ``context`` / ``context59``: Pascal Context as mmsegmentation converts it (VOC2010 with
  ``ImageSets/SegmentationContext/val.txt`` and ``SegmentationClassContext/<id>.png``, 0 =
  background): 60 labels with background, or 59 without (the no-background protocol).
- ``coco-object``: COCO-Object as mmsegmentation/TCL convert it: ``images/val2017/<id>.jpg`` and
  ``annotations/val2017/<id>_instanceTrainIds.png`` (0 background, 1–80 the COCO things).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile, BadInput


@dataclass(frozen=True)
class Dataset:
    """The pairs of one split: (id, image, ground truth), the vocabulary and the protocol."""

    name: str
    vocabulary: str
    background: bool
    root: Path
    items: list[tuple[str, Path, Path]] = field(default_factory=list)

    def protocol(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root), "images": len(self.items),
                "background": "class 0, predicted through background prototypes" if self.background
                else "ignored: ground-truth 0 becomes 255, labels shift down by one",
                "ignore_label": 255, "resize": "short side 448 for prediction, scored at the original size"}


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise BadFile(root, f"has none of {', '.join(candidates)}", fix="give the dataset's root folder")


def _split(list_file: Path, images: Path, labels: Path, image_suffix: str,
           label_suffix: str) -> list[tuple[str, Path, Path]]:
    ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise BadFile(list_file, "lists no images", fix="check the dataset download")
    return [(i, images / f"{i}{image_suffix}", labels / f"{i}{label_suffix}") for i in ids]


def _voc(root: Path) -> Dataset:
    base = _find(root, "ImageSets/Segmentation", "VOC2012/ImageSets/Segmentation",
                 "VOCdevkit/VOC2012/ImageSets/Segmentation").parent.parent
    items = _split(base / "ImageSets/Segmentation/val.txt", base / "JPEGImages", base / "SegmentationClass",
                   ".jpg", ".png")
    return Dataset("voc", "voc", True, base, items)


def _context(root: Path, background: bool) -> Dataset:
    base = _find(root, "ImageSets/SegmentationContext", "VOC2010/ImageSets/SegmentationContext",
                 "VOCdevkit/VOC2010/ImageSets/SegmentationContext").parent.parent
    items = _split(base / "ImageSets/SegmentationContext/val.txt", base / "JPEGImages",
                   base / "SegmentationClassContext", ".jpg", ".png")
    return Dataset("context" if background else "context59", "context", background, base, items)


def _coco_object(root: Path) -> Dataset:
    images = _find(root, "images/val2017")
    labels = _find(root, "annotations/val2017")
    suffix = "_instanceTrainIds.png"
    items = sorted((p.name[: -len(suffix)], images / f"{p.name[: -len(suffix)]}.jpg", p)
                   for p in labels.glob(f"*{suffix}"))
    if not items:
        raise BadFile(labels, f"holds no *{suffix} label maps", fix="convert COCO-Object as mmsegmentation does")
    return Dataset("coco-object", "coco-object", True, root, items)


READERS = {"voc": _voc, "context": lambda r: _context(r, True), "context59": lambda r: _context(r, False),
           "coco-object": _coco_object}


def open_dataset(name: str, root: str | Path) -> Dataset:
    """The validation split of dataset ``name`` under ``root``; every listed file must exist."""
    if name not in READERS:
        raise BadInput(f"unknown dataset {name!r}", f"choose from {', '.join(READERS)}")
    r = Path(root)
    if not r.is_dir():
        raise BadFile(r, "is not a folder", fix=f"give the root of the {name} dataset")
    ds = READERS[name](r)
    for _, image, gt in ds.items:
        for p in (image, gt):
            if not p.is_file():
                raise BadFile(p, f"is listed by the {name} split but missing", fix="check the dataset download")
    return ds
