"""`ovdiff explain`: the regions returned are those of the prototypes that won."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.formats.prototypes import read_bank, write_prototypes
from ovdiff_cli.formats.segmentation import Explanation, write_explanation
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.stages.explain import explain
from tests.helpers import column_support_set, files_of, one_line_error

MODELS = {"preset": "hand", "tiny": True, "components": {}}


def protos(s: SupportSet, name: str, out: Path) -> Path:
    fg = Side(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1], [0.9, 0.2]]), torch.tensor([0, 1]),
              torch.tensor([[1.0, 0.3], [0.8, 0.4]]),
              # pooled cells on a 2 × 2 grid: part 0 = image 0 cell (0,0) and image 1 cells (0,0), (1,0);
              # part 1 = image 1 cell (0,1)
              torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1]]), torch.tensor([0, 0, 0, 1]))
    bg = Side(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.1, 1.0]]), torch.tensor([1]),
              torch.zeros(0, 2), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    meta = {"class": name, "extractor": "dino", "models": MODELS, "inputs": {}, "features": {"extractor": "dino"},
            "grid": [2, 2], "support": str(s.path)}
    return write_prototypes(out / f"{name}.dino.safetensors", Prototypes(fg, bg, meta))


@pytest.fixture
def world(tmp_path: Path, runner):
    red = column_support_set(tmp_path / "support" / "red", [(0, 4), (4, 8)])
    green = column_support_set(tmp_path / "support" / "green", [(8, 12)])
    files = [protos(red, "red", tmp_path / "protos"), protos(green, "green", tmp_path / "protos")]
    result = runner.invoke(main, ["filter-stuff", *map(str, files), "--vocab", "red,green", "-o", str(tmp_path / "banks")])
    assert result.exit_code == 0, result.output
    bank = read_bank(tmp_path / "banks" / "bank.dino.safetensors")
    # red's fg rows: class, instance 0, instance 1, part 0, part 1 → bank rows 0..4
    assert bank.fg.owner.tolist()[:5] == [1] * 5 and bank.fg.kind.tolist()[:5] == [0, 1, 1, 2, 2]
    labels = torch.zeros(4, 4, dtype=torch.long)
    labels[:, :2] = 1
    rows = torch.full((4, 4), -1, dtype=torch.long)
    rows[:, 0] = 2            # red instance 1 decides column 0
    rows[:3, 1] = 3           # red part 0 decides most of column 1
    rows[3, 1] = 2
    sims = torch.full((4, 4), 0.5)
    sims[:, 0] = 0.9
    e = Explanation(labels, {"dino": rows}, {"dino": sims},
                    {"image": "x.jpg", "vocabulary": bank.vocabulary.to_meta(), "inputs": {}, "size": [8, 8],
                     "resized": [4, 4], "banks": {}})
    path = write_explanation(tmp_path / "seg" / "x.explain.safetensors", e)
    return tmp_path, path, red


def test_a_class_is_explained_by_the_prototypes_that_won(world) -> None:
    tmp, path, red = world
    records = explain(path, [tmp / "banks"], class_name="red")
    assert [(r.owner, r.kind, r.index) for r in records] == [("red", "instance", 1), ("red", "part", 0)]
    inst, part = records
    assert inst.share == pytest.approx(5 / 8) and inst.similarity == pytest.approx((4 * 0.9 + 0.5) / 5)
    assert part.share == pytest.approx(3 / 8)
    # instance 1 → support image 1 with its foreground mask (columns 4–7)
    (n, mask), = inst.regions
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:, 4:8] = True
    assert n == 1 and torch.equal(mask, expected)
    # part 0 → image 1 (two cells: (0,0), (1,0)) first, then image 0 (cell (0,0)); cells are 8 × 8 blocks
    assert [n for n, _ in part.regions] == [1, 0]
    block = torch.zeros(16, 16, dtype=torch.bool)
    block[:, :8] = True
    assert torch.equal(part.regions[0][1], block)
    assert torch.equal(part.regions[1][1], torch.zeros(16, 16, dtype=torch.bool).index_fill(0, torch.arange(8), True)
                       & block)


def test_a_pixel_background_through_the_floor_has_no_prototype(world, runner) -> None:
    tmp, path, _ = world
    result = runner.invoke(main, ["explain", str(path), "--bank", str(tmp / "banks"), "--at", "7,7", "--json"])
    assert result.exit_code == 0, result.output
    (r,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert r["kind"] == "none" and r["share"] == 1.0 and r["support_images"] == []


def test_the_picture(world, runner) -> None:
    tmp, path, _ = world
    result = runner.invoke(main, ["explain", str(path), "--bank", str(tmp / "banks"), "-o", str(tmp / "e.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp / "e.png")] and (tmp / "e.png").stat().st_size > 0


def _move_red_prototypes(tmp: Path) -> None:
    (tmp / "protos" / "red.dino.safetensors").rename(tmp / "red.moved")


# Each row: what to spoil in the world (or None), the arguments after ``explain`` (from the world's
# folder and its explanation file) and the parts the one error line must hold.
@pytest.mark.parametrize("spoil, args, parts", [
    (None, lambda tmp, path: [str(path), "--bank", str(tmp / "banks"), "--class", "blue"], ["'blue'"]),
    (None, lambda tmp, path: [str(tmp / "seg" / "y.png"), "--bank", str(tmp / "banks")],
     ["y.explain.safetensors", "--explain"]),
    (_move_red_prototypes, lambda tmp, path: [str(path), "--bank", str(tmp / "banks"), "--class", "red"],
     ["--prototypes"]),
], ids=["class-not-in-the-vocabulary", "no-explain-file", "prototypes-moved"])
def test_errors(world, runner, spoil, args, parts: list[str]) -> None:
    tmp, path, _ = world
    if spoil is not None:
        spoil(tmp)
    before = files_of(tmp)
    line = one_line_error(runner.invoke(main, ["explain", *args(tmp, path)]))
    assert all(part in line for part in parts), line
    assert files_of(tmp) == before


# -- the picture never replaces a file ovdiff did not write (docs/design.md §4.1)-----------------------


def _picture_meta(path: Path) -> dict:
    from ovdiff_cli.formats.provenance import ovdiff_schema

    schema, meta = ovdiff_schema(path)
    assert schema == "ovdiff.explain-picture/1"
    return meta


def test_the_picture_goes_beside_the_segmentation_and_replaces_only_its_own_kind(world, runner) -> None:
    tmp, path, _ = world
    args = ["explain", str(path), "--bank", str(tmp / "banks")]
    result = runner.invoke(main, [*args, "--class", "red"])
    assert result.exit_code == 0, result.output
    picture = tmp / "seg" / "x.explain.png"  # x.explain.safetensors → x.explain.png
    assert result.stdout.split() == [str(picture)]
    assert _picture_meta(picture)["class"] == "red"
    # an earlier explain picture is replaced by the new query's
    result = runner.invoke(main, [*args, "--at", "1,1"])
    assert result.exit_code == 0, result.output
    assert _picture_meta(picture)["at"] == [1, 1] and _picture_meta(picture)["class"] is None


@pytest.mark.parametrize("occupant", ["photo", "label map", "notes"])
def test_the_picture_never_replaces_another_file(world, runner, occupant: str) -> None:
    from PIL import Image

    from ovdiff_cli.formats.images import write_rgb_png

    tmp, path, _ = world
    target = tmp / "mine.png"
    if occupant == "photo":
        Image.new("RGB", (3, 2), (10, 20, 30)).save(target)
    elif occupant == "label map":
        write_rgb_png(target, np.zeros((2, 2, 3), np.uint8), {"schema": "ovdiff.labelmap/1"})
    else:
        target.write_text("not a picture at all")
    before = target.read_bytes()
    line = one_line_error(runner.invoke(main, ["explain", str(path), "--bank", str(tmp / "banks"),
                                               "-o", str(target)]))
    assert str(target) in line
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []  # no temporary or lock left
