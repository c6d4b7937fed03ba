"""explain: the support regions behind a segmentation's pixels (docs/method.md §9).

From ``<stem>.explain.safetensors`` (written by ``segment --explain``), a query (a pixel or a
class) votes for the bank rows that decided its pixels, per extractor. Each row maps to its
prototype: an instance → that support image with its mask; a part → the support pixels of its
cluster, as blocks of their grid cells, grouped by image; the class prototype → all masks of the
class. The prototype files come from the bank's metadata (or ``--prototypes``), the support
sets from the prototype files' metadata (or ``--support``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovdiff_cli.core.explain import cell_blocks, vote
from ovdiff_cli.core.pictures import overlay
from ovdiff_cli.core.prototypes import Prototypes
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats.images import write_rgb_png
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.prototypes import KINDS, Bank, read_prototypes
from ovdiff_cli.formats.segmentation import Explanation, read_explanation
from ovdiff_cli.formats.supportset import BACKGROUND, FOREGROUND, SupportSet
from ovdiff_cli.stages.segment import load_banks
from ovdiff_cli.stages.support import load_images

MAX_IMAGES = 4  # support images shown per prototype


@dataclass
class Record:
    """One prototype behind a query: where it is in the bank and which support regions made it."""

    query: str
    extractor: str
    owner: str
    side: str
    kind: str
    index: int
    share: float
    similarity: float
    regions: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (support image, mask [S, S])
    support: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "extractor": self.extractor, "class": self.owner, "side": self.side,
                "kind": self.kind, "index": self.index, "share": round(self.share, 6),
                "similarity": round(self.similarity, 6), "support": self.support,
                "support_images": [n for n, _ in self.regions],
                "region_pixels": [int(m.sum()) for _, m in self.regions]}


def explanation_of(path: Path) -> tuple[Path, Explanation]:
    """The explanation file for a label map ``<stem>.png`` (beside it) or the file itself."""
    p = path.with_name(f"{path.stem}.explain.safetensors") if path.suffix.lower() == ".png" else path
    if not p.is_file():
        raise BadFile(p, "does not exist", fix="segment with --explain to write it")
    return p, read_explanation(p)


def queries(e: Explanation, vocab_names: list[str], at: tuple[int, int] | None,
            class_name: str | None) -> list[tuple[str, torch.Tensor]]:
    """(name, pixel mask [H, W]) per query: one pixel, one class, or every class present."""
    labels = e.labels
    h, w = labels.shape
    if at is not None:
        h0, w0 = e.meta.get("size", [h, w])
        x, y = at
        if not (0 <= x < w0 and 0 <= y < h0):
            raise BadInput(f"--at {x},{y} is outside the {w0}×{h0} image", "give X,Y within the image")
        m = torch.zeros(h, w, dtype=torch.bool)
        m[min(h - 1, int(y * h / h0)), min(w - 1, int(x * w / w0))] = True
        return [(f"pixel {x},{y}", m)]
    names = ["background", *vocab_names]
    if class_name is not None:
        if class_name not in names:
            raise BadInput(f"--class {class_name!r} is not in the vocabulary", f"choose from {', '.join(names)}")
        label = names.index(class_name)
        m = labels == label
        if not m.any():
            raise BadInput(f"no pixel of the segmentation is {class_name!r}", "choose a class that is present")
        return [(class_name, m)]
    return [(names[v], labels == v) for v in torch.unique(labels).tolist()]


class PrototypeSource:
    """Prototype files and support sets behind one bank, loaded on demand."""

    def __init__(self, bank_file: Path, bank: Bank, prototypes_dir: Path | None, support: Sequence[Path]) -> None:
        self.bank_file, self.bank = bank_file, bank
        self.prototypes_dir = prototypes_dir
        self.support = {}
        for folder in support:
            s = SupportSet.open(folder)
            self.support[str(s.read_image(s.image_indices()[0])[1].get("class") or s.path.name)] = s
        self._protos: dict[str, Prototypes] = {}
        self._paths: dict[str, Path] = {}

    def prototypes(self, owner: str) -> Prototypes:
        if owner not in self._protos:
            recorded = Path(_text(self.bank.meta.get("sources"), owner))  # read, never written
            path = self.prototypes_dir / recorded.name if self.prototypes_dir is not None else recorded
            if not path.is_file():
                raise BadFile(path if str(path) != "." else self.bank_file,
                              f"holds no prototype file of {owner!r} for {self.bank.extractor}",
                              fix="pass --prototypes DIR, the folder `ovdiff prototype` wrote")
            inputs = self.bank.meta.get("inputs")
            want = inputs.get(owner) if isinstance(inputs, dict) else None  # keyed by class, as filter-stuff records
            if want is not None and file_sha256(path) != want:
                raise BadFile(path, f"is not the file {self.bank_file} was built from (its hash differs)",
                              fix="rebuild the bank with `ovdiff filter-stuff`, or pass the right --prototypes")
            self._protos[owner] = read_prototypes(path)
            self._paths[owner] = path
        return self._protos[owner]

    def support_set(self, owner: str, protos: Prototypes) -> SupportSet:
        if owner in self.support:
            return self.support[owner]
        recorded = _text(protos.meta, "support")  # read, never written
        folder = Path(recorded)
        if not recorded or not (folder / "images").is_dir():
            where, problem = ((folder, f"is not the support set of {owner!r}") if recorded else
                              (self._paths[owner], "records no support set"))
            raise BadFile(where, problem, fix="pass its folder with --support")
        self.support[owner] = SupportSet.open(folder)
        return self.support[owner]


def _text(meta: Any, key: str) -> str:
    """``meta[key]`` when it is text, else '' (hostile or old metadata then reads as "not recorded")."""
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, str) and "\0" not in value else ""


def regions(source: PrototypeSource, owner: str, side: str, kind: str, index: int) -> tuple[list[tuple[int, torch.Tensor]], str]:
    """The support regions behind one prototype, most important first, and the support folder."""
    protos = source.prototypes(owner)
    s = source.support_set(owner, protos)
    label = FOREGROUND if side == "fg" else BACKGROUND
    p_side = protos.fg if side == "fg" else protos.bg
    if kind == "instance":
        n = int(p_side.instance_image[index])
        return [(n, torch.from_numpy(s.read_mask(n)[0]) == label)], str(s.path)
    if kind == "class":
        images = [int(n) for n in p_side.instance_image.tolist()][:MAX_IMAGES]
        return [(n, torch.from_numpy(s.read_mask(n)[0]) == label) for n in images], str(s.path)
    if p_side.pooled_label.numel() == 0:
        raise BadFile(source.prototypes_dir or Path(str(s.path)), f"the {owner!r} prototypes keep no cluster labels",
                      fix="recompute them with `ovdiff prototype`")
    cells = p_side.pooled_index[p_side.pooled_label == index]              # [P, 3] (n, y, x)
    grid = tuple(protos.meta["grid"])
    size = int(s.read_mask(s.image_indices()[0])[0].shape[0])
    images, counts = torch.unique(cells[:, 0], return_counts=True)
    order = sorted(range(images.numel()), key=lambda k: (-int(counts[k]), int(images[k])))[:MAX_IMAGES]
    return [(int(images[k]), cell_blocks(cells[cells[:, 0] == images[k]][:, 1:], grid, size)) for k in order], str(s.path)


def explain(segmentation: Path, bank_paths: Sequence[Path], *, support: Sequence[Path] = (),
            prototypes_dir: Path | None = None, at: tuple[int, int] | None = None, class_name: str | None = None,
            top: int = 3) -> list[Record]:
    """Records of the prototypes behind the queried pixels, per extractor (see the module doc)."""
    path, e = explanation_of(segmentation)
    banks = load_banks(bank_paths)
    vocab = next(iter(banks.values()))[1].vocabulary
    recorded = e.meta.get("banks", {})
    for ex, (f, _) in banks.items():
        if ex in recorded and recorded[ex].get("sha256") != file_sha256(f):
            raise BadFile(f, f"is not the {ex} bank {path} was made with", fix="give the banks segment used")
    sources = {ex: PrototypeSource(f, b, prototypes_dir, support) for ex, (f, b) in banks.items()}
    out = []
    for name, mask in queries(e, vocab.names, at, class_name):
        side = "bg" if name == "background" or (at is not None and int(e.labels[mask][0]) == 0) else "fg"
        for ex in e.rows:
            if ex not in banks:
                continue
            votes, floored = vote(e.rows[ex], e.similarity[ex], mask, top)
            bank = banks[ex][1]
            b_side = bank.fg if side == "fg" else bank.bg
            for v in votes:
                owner = vocab.names[int(b_side.owner[v.row]) - 1]
                kind = KINDS[int(b_side.kind[v.row])]
                index = int(b_side.index[v.row])
                regs, folder = regions(sources[ex], owner, side, kind, index)
                out.append(Record(name, ex, owner, side, kind, index, v.share, v.similarity, regs, folder))
            if floored > 0:
                out.append(Record(name, ex, "", "bg", "none", -1, floored, float("nan"), [], ""))
    return out


def render(records: Sequence[Record], thumb: int = 128) -> np.ndarray:
    """A contact sheet: one row per record, its caption, then its support images with the region tinted."""
    from PIL import Image, ImageDraw

    caption_w = 300
    rows = []
    for r in records:
        canvas = Image.new("RGB", (caption_w + MAX_IMAGES * (thumb + 4), thumb + 8), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        if r.index < 0:
            text = f"{r.query} · {r.extractor}\nno supporting prototype\n(background through the ≤ 0 floor)\n" \
                   f"share {r.share:.0%}"
        else:
            text = (f"{r.query} · {r.extractor}\n{r.owner} {r.side} {r.kind} #{r.index}\n"
                    f"share {r.share:.0%}, similarity {r.similarity:.3f}")
        draw.multiline_text((4, 4), text, fill=(0, 0, 0))
        s = SupportSet(r.support) if r.support else None
        for k, (n, m) in enumerate(r.regions[:MAX_IMAGES]):
            image = load_images(s, [n], int(m.shape[0]))[0]
            pic = Image.fromarray(overlay(image, m, torch.zeros_like(m)).numpy()).resize((thumb, thumb))
            canvas.paste(pic, (caption_w + k * (thumb + 4), 4))
        rows.append(np.asarray(canvas))
    if not rows:
        return np.full((thumb, caption_w, 3), 255, np.uint8)
    return np.concatenate(rows, axis=0)


#: The schema in a picture's ``ovdiff`` PNG text chunk: a later explain may replace such a
#: picture, never any other file.
PICTURE_SCHEMA = "ovdiff.explain-picture/1"


def picture_path(segmentation: Path) -> Path:
    """``<stem>.explain.png`` beside a label map ``<stem>.png`` or its ``<stem>.explain.safetensors``."""
    name = segmentation.name
    stem = name[: -len(".explain.safetensors")] if name.endswith(".explain.safetensors") else segmentation.stem
    return segmentation.with_name(f"{stem}.explain.png")


def check_picture(out: Path) -> None:
    """Refuse, before any work, a picture path holding a file that is not an explain picture."""
    provenance.check_replaceable(out, PICTURE_SCHEMA, "explain")


def write_picture(out: Path, records: Sequence[Record], meta: dict[str, Any]) -> Path:
    """Render and write the picture; an earlier explain picture there is replaced, nothing else is."""
    picture = render(records)
    with locked(out):
        check_picture(out)
        return write_rgb_png(out, picture, {**meta, "schema": PICTURE_SCHEMA})
