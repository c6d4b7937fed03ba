"""Nothing read from a file's metadata chooses where ovdiff writes (docs/design.md §4).

The fields that reach a written path, found by reading every stage:

- a prototype file's ``extractor`` → filter-stuff's ``bank.<extractor>.safetensors``: refused
  by the readers (read_prototypes, read_bank) unless it is a name ovdiff gives;
- a support set's ``class`` (image metadata) → prototype's ``<slug>.<extractor>.safetensors``:
  slugified, so only letters, digits and ``-`` reach the name;
- a vocabulary's name → run's ``vocabulary/<slug>-<digest>`` folder: slugified likewise.

Read paths (a bank's ``sources``, a prototype file's ``support``, used by explain) may name any
file to read; hostile values there are one-line errors, never a write.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.errors import BadFile
from ovdiff_cli.core.bank import Rows
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.formats.prototypes import Bank, read_bank, read_prototypes, write_bank, write_prototypes
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.formats.vocabulary import build
from tests.helpers import HandFeatures, column_support_set, files_of, one_line_error

MODELS = {"preset": "hand", "tiny": True, "components": {}}

#: Extractor names a hostile or broken file may carry; none is a name ovdiff gives.
HOSTILE = ["x/../../../OUTSIDE", "../OUTSIDE", "/tmp/OUTSIDE", "..", ".", "", "a\\..\\b", "sd\0", "sd\n",
           " sd", "s" * 200, "bank.sd", 5, None, ["sd"], {"name": "sd"}]


def _side(values: list[float]) -> Side:
    empty = Side.empty(2)
    return Side(torch.tensor([values]), empty.instance, empty.instance_image, empty.part,
                empty.pooled_index, empty.pooled_label)


def _prototypes(path: Path, name: object = "cat", extractor: object = "dino", **extra: object) -> Path:
    meta = {"class": name, "extractor": extractor, "models": MODELS, "inputs": {},
            "features": {"extractor": "dino"}, **extra}
    return write_prototypes(path, Prototypes(_side([1.0, 0.0]), Side.empty(2), meta))


def _tree(root: Path) -> dict[str, bytes]:
    return files_of(root)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("extractor", HOSTILE, ids=repr)
def test_filter_stuff_refuses_a_hostile_extractor_and_writes_nothing(runner, tmp_path: Path, extractor: object,
                                                                     overwrite: list[str]) -> None:
    work = tmp_path / "work"
    protos = _prototypes(work / "protos" / "cat.x.safetensors", extractor=extractor)
    out = work / "a" / "banks"
    # where out / "bank.x/../../../OUTSIDE.safetensors" leads: an unrelated file of the user's
    victim = work / "OUTSIDE.safetensors"
    victim.write_bytes(b"someone's data")
    before = _tree(tmp_path)
    line = one_line_error(runner.invoke(main, ["filter-stuff", str(protos), "--vocab", "cat,", "-o", str(out),
                                               *overwrite]))
    assert str(protos) in line and "extractor" in line and "ovdiff prototype" in line
    assert _tree(tmp_path) == before and not (work / "a").exists()


@pytest.mark.parametrize("extractor", HOSTILE, ids=repr)
def test_readers_refuse_a_hostile_extractor(tmp_path: Path, extractor: object) -> None:
    protos = _prototypes(tmp_path / "p.safetensors", extractor=extractor)
    with pytest.raises(BadFile, match="extractor"):
        read_prototypes(protos)
    side = Rows(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), torch.tensor([0]), torch.tensor([0]))
    empty = Rows(torch.zeros(0, 2), *(torch.zeros(0, dtype=torch.long),) * 3)
    bank = write_bank(tmp_path / "bank.safetensors", Bank(side, empty, build("v", [("cat", None, None)]),
                                                          {"extractor": extractor, "models": MODELS, "inputs": {}}))
    with pytest.raises(BadFile, match="extractor") as e:
        read_bank(bank)
    assert "\n" not in str(e.value)


def test_segment_refuses_a_bank_with_a_hostile_extractor(runner, tmp_path: Path) -> None:
    side = Rows(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), torch.tensor([0]), torch.tensor([0]))
    bank = write_bank(tmp_path / "bank.dino.safetensors",
                      Bank(side, side, build("v", [("cat", None, None)]),
                           {"extractor": "x/../../OUTSIDE", "models": MODELS, "inputs": {}}))
    image = tmp_path / "photo.png"
    SupportSet(tmp_path / "s").write_image(0, np.zeros((8, 8, 3), np.uint8), {"class": "cat"})
    image.write_bytes((tmp_path / "s" / "images" / "00000.png").read_bytes())
    before = _tree(tmp_path)
    line = one_line_error(runner.invoke(main, ["segment", str(image), "--bank", str(bank), "--models", "tiny",
                                               "--no-prefilter", "-o", str(tmp_path / "seg")]))
    assert str(bank) in line and "extractor" in line
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", [5, None, "", ["cat"]], ids=repr)
def test_a_prototype_file_without_a_class_name_is_one_line(runner, tmp_path: Path, name: object) -> None:
    protos = _prototypes(tmp_path / "p.safetensors", name=name)
    line = one_line_error(runner.invoke(main, ["filter-stuff", str(protos), "--vocab", "cat,",
                                               "-o", str(tmp_path / "b")]))
    assert "class" in line and str(protos) in line
    assert not (tmp_path / "b").exists()


def _digest_slug(name: str) -> str:
    return f"class-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@pytest.mark.parametrize("name, file", [
    ("../../OUTSIDE", "outside.dino.safetensors"),
    ("/etc/passwd", "etc-passwd.dino.safetensors"),
    ("a/b\\c", "a-b-c.dino.safetensors"),
    ("bank.dino", "bank-dino.dino.safetensors"),
    ("..", f"{_digest_slug('..')}.dino.safetensors"),
    ("/", f"{_digest_slug('/')}.dino.safetensors"),
    (" . ", f"{_digest_slug(' . ')}.dino.safetensors"),
])
def test_a_hostile_class_name_in_a_support_set_stays_a_file_name_inside_o(runner, tmp_path: Path, hand_preset,
                                                                          name: str, file: str) -> None:
    s = SupportSet(tmp_path / "work" / "support" / "set")
    s.write_image(0, np.full((4, 4, 3), 0, np.uint8), {"class": name})
    s.write_mask(0, np.kron(np.array([[1, 1], [2, 0]]), np.ones((2, 2))).astype(np.uint8), {"mode": "hand"})
    out = tmp_path / "work" / "a" / "protos"
    before = _tree(tmp_path)
    result = runner.invoke(main, ["prototype", str(s.path), "--models", "handx", "-x", "dino", "--clusters", "1",
                                  "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / file)]
    after = _tree(tmp_path)
    assert sorted(set(after) - set(before)) == [f"work/a/protos/{file}"]
    assert read_prototypes(out / file).class_name == name  # the name itself is kept, only the file name is safe


def test_a_long_class_name_gives_a_bounded_file_name(runner, tmp_path: Path, hand_preset) -> None:
    s = SupportSet(tmp_path / "set")
    s.write_image(0, np.full((4, 4, 3), 0, np.uint8), {"class": "word " * 60})
    s.write_mask(0, np.kron(np.array([[1, 1], [2, 0]]), np.ones((2, 2))).astype(np.uint8), {"mode": "hand"})
    result = runner.invoke(main, ["prototype", str(s.path), "--models", "handx", "-x", "dino", "--clusters", "1",
                                  "-o", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    (written,) = [Path(p) for p in result.stdout.split()]
    assert written.parent == tmp_path / "p" and len(written.name.encode()) < 100
    assert written.name.startswith("word-word-") and written.name.endswith(".dino.safetensors")


@pytest.mark.parametrize("name", ["../../OUTSIDE", "/abs/olute", "..", "", "a/b"], ids=repr)
def test_a_hostile_vocabulary_name_stays_inside_the_work_folder(tmp_path: Path, name: str) -> None:
    from ovdiff_cli.stages.run import vocabulary_folder

    vocab = build(name, [("cat", None, None)])
    folder = vocabulary_folder(tmp_path / "work", vocab)
    assert folder.parent == tmp_path / "work" / "vocabularies"
    assert folder.name.endswith(vocab.digest()[:8]) and "/" not in folder.name and not folder.name.startswith(".")


# -- explain's read paths: hostile values are one line, never a write -------------------------------

@pytest.mark.parametrize("field, value", [("support", 5), ("support", ["x"]), ("support", "/nonexistent/../x"),
                                          ("support", "a\0b"), ("sources", {"red": 7}), ("sources", "red"),
                                          ("sources", {"red": "../../../../etc/passwd"})], ids=repr)
def test_explain_with_hostile_read_paths_is_one_line(runner, tmp_path: Path, field: str, value: object) -> None:
    from ovdiff_cli.formats.segmentation import Explanation, write_explanation

    red = column_support_set(tmp_path / "support" / "red", [(0, 4)])
    extra = {"grid": [2, 2], "support": value if field == "support" else str(red.path)}
    protos = _prototypes(tmp_path / "protos" / "red.dino.safetensors", name="red", **extra)
    r = runner.invoke(main, ["filter-stuff", str(protos), "--vocab", "red,", "-o", str(tmp_path / "banks")])
    assert r.exit_code == 0, r.output
    bank_file = tmp_path / "banks" / "bank.dino.safetensors"
    if field == "sources":  # rewrite the bank's recorded sources
        b = read_bank(bank_file)
        write_bank(bank_file, Bank(b.fg, b.bg, b.vocabulary, {**b.meta, "sources": value}))
    b = read_bank(bank_file)
    labels = torch.ones(4, 4, dtype=torch.long)
    e = Explanation(labels, {"dino": torch.zeros(4, 4, dtype=torch.long)}, {"dino": torch.full((4, 4), 0.9)},
                    {"image": "x.jpg", "vocabulary": b.vocabulary.to_meta(), "inputs": {}, "size": [4, 4],
                     "resized": [4, 4], "banks": {}})
    path = write_explanation(tmp_path / "seg" / "x.explain.safetensors", e)
    before = _tree(tmp_path)
    line = one_line_error(runner.invoke(main, ["explain", str(path), "--bank", str(tmp_path / "banks"),
                                               "--class", "red"]))
    assert "--support" in line or "--prototypes" in line
    assert _tree(tmp_path) == before


def test_a_plugin_extractor_with_a_path_for_a_name_is_one_line(runner, tmp_path: Path) -> None:
    from ovdiff_cli.models import registry

    class Odd(HandFeatures):
        name = "x/../../OUTSIDE"

    comp = registry.Component("odd-features", "an extractor with a path for a name", lambda f, d, t: Odd(), tiny=True)
    registry.register_preset(registry.Preset("oddx", "tests", {"extractor.dino": comp}, tiny=True))
    try:
        s = SupportSet(tmp_path / "cat")
        s.write_image(0, np.zeros((4, 4, 3), np.uint8), {"class": "cat"})
        s.write_mask(0, np.kron(np.array([[1, 1], [2, 0]]), np.ones((2, 2))).astype(np.uint8), {"mode": "hand"})
        before = _tree(tmp_path)
        line = one_line_error(runner.invoke(main, ["prototype", str(s.path), "--models", "oddx", "-x", "dino",
                                                   "-o", str(tmp_path / "a" / "p")]))
        assert "extractor.dino" in line and "'x/../../OUTSIDE'" in line and "plugin" in line
        assert _tree(tmp_path) == before and not (tmp_path / "a").exists()
    finally:
        registry.unregister_preset("oddx")
        registry.clear_cache()
