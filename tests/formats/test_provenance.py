"""The one reuse rule (formats/provenance.py), rule by rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import provenance, tensorfile
from ovdiff_cli.formats.images import write_rgb_png

SCHEMA = tensorfile.Schema("ovdiff.thing", 1, "ovdiff make-thing", {"x": tensorfile.TensorSpec("float32", ("N",))})
SETTINGS = {"settings": {"k": 3, "mode": ("a", "b")}, "models": {"gen": "tiny"}}
INPUTS = {"image_sha256": "ab" * 32}


def _thing(path: Path, settings: dict = SETTINGS, inputs: dict = INPUTS) -> Path:
    return tensorfile.write(path, SCHEMA, {"x": torch.ones(2)}, provenance.identity(inputs, settings))


def _decide(path: Path, settings: dict = SETTINGS, inputs: dict = INPUTS, overwrite: bool = False) -> bool:
    return provenance.decide(path, "ovdiff.thing/1", stage="make-thing", inputs=inputs, settings=settings,
                             overwrite=overwrite)


def test_absent_file_is_made(tmp_path: Path) -> None:
    assert _decide(tmp_path / "t.safetensors") is False


def test_same_settings_and_inputs_are_reused_tuples_compared_as_json(tmp_path: Path) -> None:
    path = _thing(tmp_path / "t.safetensors")
    # the tuple was recorded as a JSON list: still the same settings
    assert _decide(path) is True


def test_other_inputs_make_it_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _thing(tmp_path / "t.safetensors")
    assert _decide(path, inputs={"image_sha256": "cd" * 32}) is False
    assert _decide(path, inputs={**INPUTS, "bank_sha256": "ef" * 32}) is False


def test_other_settings_are_a_conflict_naming_the_keys_and_the_fix(tmp_path: Path) -> None:
    path = _thing(tmp_path / "t.safetensors")
    with pytest.raises(BadFile) as e:
        _decide(path, settings={"settings": {"k": 4, "mode": ["a", "b"]}, "models": {"gen": "paper"}})
    # the message names each value that differs, nested keys dotted
    assert str(e.value) == (f"{path}: was made with other settings.k, models.gen; "
                            "pass --overwrite to replace it, or choose another -o")
    # a key the old file lacks differs too
    with pytest.raises(BadFile, match="other prefilter"):
        _decide(path, settings={**SETTINGS, "prefilter": True})


def test_conflict_under_run_names_a_fix_that_run_has(tmp_path: Path) -> None:
    path = _thing(tmp_path / "t.safetensors")
    with provenance.within_run(), pytest.raises(BadFile) as e:
        _decide(path, settings={**SETTINGS, "models": {}})
    assert "another -o for `ovdiff run`" in str(e.value) and "`ovdiff make-thing --overwrite`" in str(e.value)
    assert "pass --overwrite" not in str(e.value)
    with pytest.raises(BadFile, match="pass --overwrite"):  # outside run again
        _decide(path, settings={**SETTINGS, "models": {}})


def test_overwrite_remakes_an_ovdiff_file_of_any_settings(tmp_path: Path) -> None:
    path = _thing(tmp_path / "t.safetensors")
    assert _decide(path, settings={"other": 1}, overwrite=True) is False


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", ["photo", "foreign-png", "text", "foreign-safetensors", "empty", "folder"])
def test_files_ovdiff_did_not_write_are_never_replaced(tmp_path: Path, kind: str, overwrite: bool) -> None:
    path = tmp_path / "t.safetensors"
    if kind == "photo":
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")
    elif kind == "foreign-png":  # a text chunk named ovdiff, but no ovdiff schema in it
        write_rgb_png(path, np.zeros((4, 4, 3), np.uint8), {"class": "cat"})
    elif kind == "text":
        path.write_text("my notes\n")
    elif kind == "foreign-safetensors":
        from safetensors.torch import save_file

        save_file({"x": torch.ones(2)}, str(path), metadata={"schema": "someone.else/1"})
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(BadFile, match="not written by ovdiff|is a folder"):
        _decide(path, overwrite=overwrite)
    assert (path.read_bytes() if path.is_file() else None) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_ovdiff_file_of_another_kind_is_never_replaced(tmp_path: Path, overwrite: bool) -> None:
    path = tmp_path / "a.overlay.png"
    write_rgb_png(path, np.zeros((4, 4, 3), np.uint8), {"schema": "ovdiff.labelmap/1", "vocabulary": {}})
    with pytest.raises(BadFile) as e:
        provenance.decide(path, "ovdiff.overlay/1", stage="segment", inputs={}, settings={}, overwrite=overwrite)
    assert "ovdiff.labelmap/1 file where an ovdiff.overlay/1 file would go" in str(e.value)


def test_png_schema_is_read_from_the_text_chunk(tmp_path: Path) -> None:
    path = write_rgb_png(tmp_path / "x.png", np.zeros((2, 3, 3), np.uint8),
                         {"schema": "ovdiff.overlay/1", "inputs": {"image_sha256": "00"}})
    assert provenance.ovdiff_schema(path) == ("ovdiff.overlay/1", {"schema": "ovdiff.overlay/1",
                                                                   "inputs": {"image_sha256": "00"}})
    assert provenance.decide(path, "ovdiff.overlay/1", stage="segment", inputs={"image_sha256": "00"},
                             settings={}) is True


@pytest.mark.parametrize("value", ["x/../../../OUTSIDE", "..", "a/b", "", ".hidden", "a\x00b", "x" * 65, 3, None,
                                   ["sd"], "dino clip"])
def test_safe_name_refuses_what_ovdiff_never_names(tmp_path: Path, value: object) -> None:
    with pytest.raises(BadFile, match="is not a name ovdiff gives"):
        provenance.safe_name(value, tmp_path / "f.safetensors", "extractor")


@pytest.mark.parametrize("value", ["sd", "dino", "clip", "mae-l16", "hot-dog", "x_1", "a+b"])
def test_safe_name_keeps_ovdiff_names(tmp_path: Path, value: str) -> None:
    assert provenance.safe_name(value, tmp_path / "f.safetensors", "extractor") == value


def test_a_conflict_names_at_most_four_values(tmp_path: Path) -> None:
    path = _thing(tmp_path / "t.safetensors", settings={"settings": {str(i): i for i in range(6)}})
    with pytest.raises(BadFile) as e:
        _decide(path, settings={"settings": {str(i): -i - 1 for i in range(6)}})
    assert "other settings.0, settings.1, settings.2, settings.3 and 2 more;" in str(e.value)


@pytest.mark.parametrize("stage, fix", [
    ("segment", "pass --overwrite to replace it, or choose another -o"),
    ("attribute", "pass --overwrite to replace it"),  # it writes into the support set: no -o
    ("mask", "pass --overwrite to replace it"),
    ("explain", "choose another -o"),  # no --overwrite
])
def test_a_fix_names_only_options_the_command_has(tmp_path: Path, stage: str, fix: str) -> None:
    path = _thing(tmp_path / "t.safetensors")
    with pytest.raises(BadFile) as e:
        provenance.decide(path, "ovdiff.thing/1", stage=stage, inputs=INPUTS, settings={"models": {}})
    assert str(e.value).endswith(f"; {fix}")


@pytest.mark.parametrize("stage, tail", [
    ("segment", "(not even with --overwrite); choose another -o, or move the file away"),
    ("mask", "(not even with --overwrite); move the file away"),
    ("explain", "will not replace it; choose another -o, or move the file away"),
])
def test_a_foreign_file_message_fits_the_command(tmp_path: Path, stage: str, tail: str) -> None:
    path = tmp_path / "t.safetensors"
    path.write_text("mine\n")
    with pytest.raises(BadFile) as e:
        provenance.check_replaceable(path, "ovdiff.thing/1", stage)
    assert str(e.value).endswith(tail)
    with provenance.within_run(), pytest.raises(BadFile) as e:
        provenance.check_replaceable(path, "ovdiff.thing/1", stage)
    assert "--overwrite" not in str(e.value) and "another -o for `ovdiff run`" in str(e.value)


def test_candidates_files_are_told_by_the_schema_of_every_record(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    record = '{"image": "a.png", "schema": "ovdiff.candidates/1"}\n'
    path.write_text(record * 2 + "\n")
    assert provenance.ovdiff_schema(path) == ("ovdiff.candidates/1", {})
    path.write_text(record + '{"image": "b.png"}\n')  # one hand-made record: not a file ovdiff wrote
    assert provenance.ovdiff_schema(path) == (None, {})
    path.write_text('{"image": "a.png", "schema": "mine/1"}\n')
    assert provenance.ovdiff_schema(path) == (None, {})



def test_assumed_values_fill_only_what_a_file_lacks() -> None:
    from ovdiff_cli.formats.provenance import with_assumed

    old = {"settings": {"clusters": 32}, "class": "cat"}
    assumed = {"settings": {"kmeans": "sklearn", "clusters": 8}, "extra": 1}
    assert with_assumed(old, assumed) == {"settings": {"clusters": 32, "kmeans": "sklearn"}, "class": "cat",
                                          "extra": 1}
    assert old == {"settings": {"clusters": 32}, "class": "cat"}  # the recorded metadata is not changed
    assert with_assumed(old, None) == old
