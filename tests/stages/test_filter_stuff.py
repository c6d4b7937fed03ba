"""`ovdiff filter-stuff` through the command line on hand-made prototype files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.formats.prototypes import read_bank, write_prototypes
from tests.helpers import files_of, hold_lock, one_line_error

FEATURES = {"extractor": "dino", "model": "hand"}
MODELS = {"preset": "hand", "tiny": True, "components": {}}


def v(cos: float, scale: float = 1.0) -> list[float]:
    return [scale * cos, scale * math.sqrt(1 - cos**2)]


def side(cls: list[float], instances: list[list[float]], parts: list[list[float]]) -> Side:
    n = len(instances)
    return Side(torch.tensor([cls]), torch.tensor(instances).view(n, 2), torch.arange(n),
                torch.tensor(parts).view(len(parts), 2), torch.zeros(0, 3, dtype=torch.long),
                torch.zeros(0, dtype=torch.long))


def write(folder: Path, name: str, fg: Side, bg: Side, extractor: str = "dino",
          features: dict | None = None) -> Path:
    meta = {"class": name, "extractor": extractor, "models": MODELS, "inputs": {"support_sha256": name},
            "features": features or {**FEATURES, "extractor": extractor}}
    return write_prototypes(folder / f"{name}.{extractor}.safetensors", Prototypes(fg, bg, meta))


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    d = tmp_path / "protos"
    empty = Side.empty(2)
    # sky is stuff (built-in table); its fg prototypes point along (1, 0)
    return [
        write(d, "cat", side(v(0.0), [v(0.1)], [v(0.05)]),
              side(v(0.86, 2.0), [v(0.84, 3.0)], [v(0.2)])),   # bg class 0.86 > 0.85: dropped; the others stay
        write(d, "sky", side([2.0, 0.0], [[1.0, 0.0]], []), side(v(0.3), [], [])),
        write(d, "dog", side(v(0.2), [v(0.3), v(0.4)], [v(0.5)]), empty),
    ]


def run(runner, *args: str):
    return runner.invoke(main, ["filter-stuff", *args])


def test_a_bank_with_the_stuff_rule(runner, files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "banks"
    result = run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "bank.dino.safetensors")]
    bank = read_bank(out / "bank.dino.safetensors")
    assert bank.vocabulary.names == ["cat", "sky", "dog"]
    # fg rows in class order, kinds class/instance/part: cat 3, sky 2, dog 4
    assert bank.fg.owner.tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert bank.fg.kind.tolist() == [0, 1, 2, 0, 1, 0, 1, 1, 2]
    assert bank.fg.index.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0]
    torch.testing.assert_close(bank.fg.vectors.norm(dim=1), torch.ones(9))
    torch.testing.assert_close(bank.fg.vectors[3], torch.tensor([1.0, 0.0]))
    # bg: cat's class row (cos 0.86 with sky's fg) dropped, its instance (0.84) and part stay;
    # sky (stuff) keeps none; dog has none
    assert bank.bg.owner.tolist() == [1, 1] and bank.bg.kind.tolist() == [1, 2]
    torch.testing.assert_close(bank.bg.vectors[0], torch.tensor(v(0.84)))
    dropped = bank.meta["dropped"]
    assert [(d["class"], d["kind"], d["index"]) for d in dropped] == [("sky", 0, 0), ("cat", 0, 0)]
    assert dropped[1]["against"]["class"] == "sky" and dropped[1]["cosine"] == pytest.approx(0.86, abs=1e-6)
    assert bank.meta["stuff"] == ["sky"] and bank.meta["settings"]["threshold"] == 0.85


def test_json_counts(runner, files: list[Path], tmp_path: Path) -> None:
    result = run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(tmp_path / "b"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["extractor"], summary["fg"], summary["bg"], summary["bg_dropped"]) == ("dino", 9, 2, 2)
    assert summary["classes"]["cat"] == {"fg": 3, "bg": 2, "bg_dropped": 1}


def test_options_stuff_kinds_and_background_modes(runner, files: list[Path], tmp_path: Path) -> None:
    args = [*map(str, files), "--vocab", "cat,sky,dog"]
    # --stuff dog: dog too is stuff (it has no bg anyway); cat's bg now also meets dog's fg
    assert run(runner, *args, "--stuff", "dog", "-o", str(tmp_path / "a")).exit_code == 0
    assert read_bank(tmp_path / "a" / "bank.dino.safetensors").meta["stuff"] == ["dog", "sky"]
    assert run(runner, *args, "--proto-types", "class", "--bg-mode", "mean", "-o", str(tmp_path / "b")).exit_code == 0
    bank = read_bank(tmp_path / "b" / "bank.dino.safetensors")
    assert bank.fg.kind.tolist() == [0, 0, 0] and len(bank.bg.owner) == 0  # cat's only bg row was the dropped one
    assert run(runner, *args, "--bg-mode", "zero", "-o", str(tmp_path / "c")).exit_code == 0
    assert len(read_bank(tmp_path / "c" / "bank.dino.safetensors").bg.owner) == 0
    assert run(runner, *args, "--no-stuff-filter", "-o", str(tmp_path / "d")).exit_code == 0
    assert read_bank(tmp_path / "d" / "bank.dino.safetensors").bg.owner.tolist() == [1, 1, 1, 2]
    line = one_line_error(run(runner, *args, "--stuff", "tree", "-o", str(tmp_path / "e")))
    assert "'tree'" in line
    line = one_line_error(run(runner, *args, "--proto-types", "class,parts", "-o", str(tmp_path / "e")))
    assert "--proto-types" in line


def test_rerun_skips_and_other_settings_need_overwrite(runner, files: list[Path], tmp_path: Path) -> None:
    args = [*map(str, files), "--vocab", "cat,sky,dog", "-o", str(tmp_path / "b")]
    assert run(runner, *args).exit_code == 0
    before = files_of(tmp_path / "b")
    assert run(runner, *args).exit_code == 0 and files_of(tmp_path / "b") == before
    line = one_line_error(run(runner, *args, "--threshold", "0.5"))
    assert "bank.dino.safetensors" in line and "--overwrite" in line
    assert run(runner, *args, "--threshold", "0.5", "--overwrite").exit_code == 0


def _odd_dog(d: Path) -> Path:
    """dog's prototypes made with other feature settings than cat's and sky's."""
    return write(d / "odd", "dog", side(v(0.2), [], []), Side.empty(2),
                 features={**FEATURES, "block": -2})


# Each row: the prototype files given (from the cat, sky, dog files and the protos folder) and the parts
# the one error line must hold (from those files).
@pytest.mark.parametrize("given, parts", [
    (lambda files, d: [files[0], files[1], _odd_dog(d)], lambda files, d: [str(d / "odd" / "dog.dino.safetensors"), "features"]),
    (lambda files, d: [files[0], files[1]], lambda files, d: ["'dog'", "ovdiff prototype"]),
    (lambda files, d: [*files, _odd_dog(d)], lambda files, d: ["one file per class"]),
], ids=["other-feature-settings", "a-class-without-a-file", "two-files-for-one-class"])
def test_files_that_do_not_belong_together(runner, files: list[Path], tmp_path: Path, given, parts) -> None:
    d = tmp_path / "protos"
    line = one_line_error(run(runner, *map(str, given(files, d)), "--vocab", "cat,sky,dog", "-o", str(tmp_path / "b")))
    assert all(part in line for part in parts(files, d)), line
    assert not (tmp_path / "b").exists()


def test_other_extractors_make_other_banks_and_extra_classes_are_ignored(runner, files: list[Path],
                                                                       tmp_path: Path) -> None:
    d = tmp_path / "protos"
    sd = [write(d, n, side(v(0.5), [], []), Side.empty(2), extractor="sd") for n in ("cat", "sky")]
    result = run(runner, *map(str, files + sd), "--vocab", "cat,sky", "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert sorted(Path(p).name for p in result.stdout.split()) == ["bank.dino.safetensors", "bank.sd.safetensors"]
    assert read_bank(tmp_path / "b" / "bank.sd.safetensors").fg.owner.tolist() == [1, 2]


# -- reruns through the one provenance rule (docs/design.md §4.1) ------------------------------------


def test_the_bank_follows_prototype_content_not_paths(runner, files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(out)).exit_code == 0
    bank = out / "bank.dino.safetensors"
    before = bank.read_bytes()
    # the same files under other names and folders: the bank is reused, not refused or rewritten
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copies = [moved / f"renamed-{k}.safetensors" for k in range(3)]
    for src, dst in zip(files, copies):
        dst.write_bytes(src.read_bytes())
    result = run(runner, *map(str, copies), "--vocab", "cat,sky,dog", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert bank.read_bytes() == before
    # dog's prototypes remade (other content at the same path): the bank is stale and made again
    write(files[0].parent, "dog", side(v(0.9), [], []), Side.empty(2))
    result = run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(out))
    assert result.exit_code == 0, result.output
    b = read_bank(bank)
    assert b.fg.owner.tolist() == [1, 1, 1, 2, 2, 3]  # dog: its class prototype alone now
    torch.testing.assert_close(b.fg.vectors[5], torch.tensor(v(0.9)))
    assert set(b.meta["inputs"]) == {"cat", "sky", "dog"}  # digests keyed by class, not by file name


@pytest.mark.parametrize("change, named", [(["--vocab", "sky,cat,dog"], "vocabulary"),
                                           (["--vocab", "cat,sky,dog", "--stuff", "dog"], "stuff"),
                                           (["--vocab", "cat,sky,dog", "--bg-mode", "mean"], "settings")])
def test_another_vocabulary_stuff_or_setting_is_an_error_with_a_fix(runner, files: list[Path], tmp_path: Path,
                                                                     change: list[str], named: str) -> None:
    out = tmp_path / "b"
    assert run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(out)).exit_code == 0
    before = files_of(out)
    line = one_line_error(run(runner, *map(str, files), *change, "-o", str(out)))
    assert "bank.dino.safetensors" in line and named in line and "--overwrite" in line
    assert files_of(out) == before
    assert run(runner, *map(str, files), *change, "-o", str(out), "--overwrite").exit_code == 0
    assert files_of(out) != before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("occupant", ["foreign", "prototype"])
def test_a_file_ovdiff_did_not_make_as_a_bank_is_never_replaced(runner, files: list[Path], tmp_path: Path,
                                                                occupant: str, overwrite: list[str]) -> None:
    target = tmp_path / "b" / "bank.dino.safetensors"
    target.parent.mkdir()
    if occupant == "foreign":
        target.write_bytes(b"\x89PNG\r\n\x1a\n a user's picture, oddly named")
    else:
        target.write_bytes(files[0].read_bytes())
    before = target.read_bytes()
    line = one_line_error(run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(target.parent),
                              *overwrite))
    assert str(target) in line and ("not written by ovdiff" in line or "ovdiff.prototypes/1" in line)
    assert target.read_bytes() == before


def test_a_locked_bank_is_one_line_after_the_timeout(runner, files: list[Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "b"
    proc = hold_lock(out / "bank.dino.safetensors", 30)
    try:
        monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", "0")
        line = one_line_error(run(runner, *map(str, files), "--vocab", "cat,sky,dog", "-o", str(out)))
        assert f"being written by process {proc.pid}" in line
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (out / "bank.dino.safetensors").exists()
