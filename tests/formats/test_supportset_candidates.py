"""Support-set folders (images with PNG metadata, masks, layout) and candidates JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.candidates import Candidates, read_candidates, write_candidates
from ovdiff_cli.formats.labelmap import write_label_map
from ovdiff_cli.formats.supportset import IMAGE_SCHEMA, MASK_SCHEMA, SupportSet
from tests.helpers import one_line_with


def rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# support images


def test_layout_paths(tmp_path: Path):
    s = SupportSet(tmp_path / "cat")
    assert s.image_path(3) == tmp_path / "cat" / "images" / "00003.png"
    assert s.mask_path(12345) == tmp_path / "cat" / "masks" / "12345.png"
    assert s.image_path(123456) == tmp_path / "cat" / "images" / "123456.png"
    assert s.crossattn_path == tmp_path / "cat" / "crossattn.safetensors"
    assert s.attribution_path == tmp_path / "cat" / "attribution.safetensors"
    assert s.image_indices() == []


def test_image_round_trip_with_metadata(tmp_path: Path):
    s = SupportSet(tmp_path / "hot-dog")
    img = rgb(0)
    meta = {"class": "hot dog", "prompt": "a good picture of a hot dog", "seed": 42, "guidance": 8.0,
            "note": "ünïcödé 猫"}
    path = s.write_image(0, img, meta)
    assert path == tmp_path / "hot-dog" / "images" / "00000.png"
    back, back_meta = s.read_image(0)
    assert back.dtype == np.uint8 and np.array_equal(back, img)
    assert back_meta == {"schema": IMAGE_SCHEMA, **meta}
    assert back_meta["schema"] == "ovdiff.support-image/1"
    assert sorted(p.name for p in s.images_dir.iterdir()) == ["00000.png"]


def test_users_own_photo_has_empty_meta(tmp_path: Path):
    s = SupportSet(tmp_path)
    s.images_dir.mkdir()
    gray = np.array([[0, 9], [99, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(s.image_path(0))
    back, meta = s.read_image(0)
    assert meta == {}
    assert back.shape == (2, 2, 3) and back[..., 1].tolist() == [[0, 9], [99, 255]]


def test_image_indices_ignore_temp_and_foreign_files(tmp_path: Path):
    s = SupportSet(tmp_path)
    for i in (10, 0, 2):
        s.write_image(i, rgb(i, 2), {"i": i})
    s.image_path(123456).write_bytes(s.image_path(0).read_bytes())
    for junk in (".00001.png.abc123.tmp", "0003.png", "notes.txt", "00004.jpg", "00005.png.bak", "a00006.png"):
        (s.images_dir / junk).write_bytes(b"x")
    assert s.image_indices() == [0, 2, 10, 123456]
    assert s.class_meta() == {"schema": IMAGE_SCHEMA, "i": 0}


def test_class_meta_is_first_image(tmp_path: Path):
    s = SupportSet(tmp_path)
    s.write_image(5, rgb(5, 2), {"class": "b"})
    s.write_image(3, rgb(3, 2), {"class": "a"})
    assert s.class_meta()["class"] == "a"


def test_open(tmp_path: Path):
    with pytest.raises(BadFile) as e:
        SupportSet.open(tmp_path / "nope")
    one_line_with(e.value, str(tmp_path / "nope"), "does not exist", "ovdiff sample")
    with pytest.raises(BadFile) as e:
        SupportSet.open(tmp_path)
    one_line_with(e.value, str(tmp_path), "no images", "ovdiff sample")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.png").write_bytes(b"x")
    with pytest.raises(BadFile):
        SupportSet.open(tmp_path)
    with pytest.raises(BadFile) as e:
        SupportSet(tmp_path).class_meta()
    one_line_with(e.value, str(tmp_path), "no images")
    SupportSet(tmp_path).write_image(0, rgb(0, 2), {})
    assert SupportSet.open(tmp_path).path == tmp_path


def _half_written_image(s: SupportSet) -> int:
    s.write_image(1, rgb(1, 16), {})
    data = s.image_path(1).read_bytes()
    s.image_path(1).write_bytes(data[: len(data) // 2])
    return 1


@pytest.mark.parametrize("make, parts", [
    (lambda s: 0, ["does not exist", "ovdiff sample"]),
    (_half_written_image, ["ovdiff sample"]),
], ids=["missing", "truncated"])
def test_read_image_missing_or_broken(tmp_path: Path, make, parts: list[str]):
    s = SupportSet(tmp_path)
    i = make(s)
    with pytest.raises(BadFile) as e:
        s.read_image(i)
    one_line_with(e.value, str(s.image_path(i)), *parts)


def test_write_image_rejects_bad_arrays(tmp_path: Path):
    s = SupportSet(tmp_path)
    with pytest.raises(ValueError):
        s.write_image(0, np.zeros((4, 4, 3), dtype=np.float32), {})
    with pytest.raises(ValueError):
        s.write_image(0, np.zeros((4, 4), dtype=np.uint8), {})
    assert not s.image_path(0).exists()
    with pytest.raises(ValueError):  # NaN in metadata
        s.write_image(0, rgb(0, 2), {"x": float("nan")})
    assert s.image_indices() == [] and list(tmp_path.rglob("*.tmp")) == []


# ---------------------------------------------------------------------------------------------
# masks


def test_mask_round_trip(tmp_path: Path):
    s = SupportSet(tmp_path)
    mask = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    path = s.write_mask(7, mask, {"mode": "cutler", "score": 0.35})
    assert path == tmp_path / "masks" / "00007.png"
    back, meta = s.read_mask(7)
    assert back.dtype == np.uint8 and back.tolist() == [[0, 1, 2], [2, 1, 0]]
    assert meta == {"schema": MASK_SCHEMA, "mode": "cutler", "score": 0.35}
    assert meta["schema"] == "ovdiff.mask/1"
    with Image.open(path) as im:
        colours = np.asarray(im.convert("RGB"))
    assert colours[0].tolist() == [[0, 0, 0], [220, 20, 60], [30, 144, 255]]  # black, the overlays' fg and bg


@pytest.mark.parametrize("mask", [np.array([[0, 3]], dtype=np.uint8), np.array([[0, 1]], dtype=np.int64),
                                  np.zeros((2, 2, 1), dtype=np.uint8)], ids=["value-3", "int64", "3d"])
def test_write_mask_refuses(tmp_path: Path, mask):
    s = SupportSet(tmp_path)
    with pytest.raises(ValueError):
        s.write_mask(0, mask, {})
    assert not s.mask_path(0).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_read_mask_needs_mask_schema(tmp_path: Path):
    s = SupportSet(tmp_path)
    write_label_map(s.mask_path(0), np.zeros((2, 2), dtype=np.uint8), {"schema": "ovdiff.support-image/1"})
    with pytest.raises(BadFile) as e:
        s.read_mask(0)
    one_line_with(e.value, str(s.mask_path(0)), "not an ovdiff support mask", "ovdiff mask")
    write_label_map(s.mask_path(1), np.zeros((2, 2), dtype=np.uint8))  # no metadata at all
    with pytest.raises(BadFile) as e:
        s.read_mask(1)
    one_line_with(e.value, str(s.mask_path(1)), "not an ovdiff support mask")


def test_read_mask_rejects_values_above_2(tmp_path: Path):
    s = SupportSet(tmp_path)
    write_label_map(s.mask_path(0), np.array([[0, 1], [2, 5]], dtype=np.uint8), {"schema": MASK_SCHEMA})
    with pytest.raises(BadFile) as e:
        s.read_mask(0)
    one_line_with(e.value, str(s.mask_path(0)), "value 5", "ovdiff mask")


def test_read_mask_missing(tmp_path: Path):
    with pytest.raises(BadFile) as e:
        SupportSet(tmp_path).read_mask(3)
    one_line_with(e.value, str(tmp_path / "masks" / "00003.png"), "does not exist", "ovdiff mask")


# ---------------------------------------------------------------------------------------------
# candidates


def records() -> list[Candidates]:
    return [
        Candidates("photos/cat.jpg", {"cat": 0.31, "dog": 0.12, "sky": 0.0}, ["cat", "dog"], ["cat"], 0.29,
                   ["cat", "sky"], "voc"),
        Candidates("фото/猫 1.png", {"hot dog": 1.0}, ["hot dog"], [], -0.5, [], "inline",
                   {"windows": 6, "note": {"a": [1, 2]}}),
    ]


def test_candidates_round_trip(tmp_path: Path):
    path = tmp_path / "out" / "candidates.jsonl"
    assert write_candidates(path, records()) == path
    back = read_candidates(path)
    assert back == records()
    assert back[1].extra == {"windows": 6, "note": {"a": [1, 2]}}
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert json.loads(lines[0]) == {"image": "photos/cat.jpg", "scores": {"cat": 0.31, "dog": 0.12, "sky": 0.0},
                                    "kept": ["cat", "dog"], "subset": ["cat"], "subset_score": 0.29,
                                    "active": ["cat", "sky"], "vocabulary": "voc"}
    second = json.loads(lines[1])
    assert "extra" not in second and second["windows"] == 6 and second["image"] == "фото/猫 1.png"
    assert "猫" in lines[1]  # written as UTF-8, not escaped
    assert sorted(p.name for p in path.parent.iterdir()) == ["candidates.jsonl"]


def test_candidates_ints_become_floats_and_blank_lines(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text('\n{"image": "a", "scores": {"cat": 1}, "kept": [], "subset": [], "subset_score": 0, '
                    '"active": []}\n   \n', encoding="utf-8")
    (rec,) = read_candidates(path)
    assert rec.scores == {"cat": 1.0} and isinstance(rec.scores["cat"], float)
    assert rec.subset_score == 0.0 and isinstance(rec.subset_score, float)
    assert rec.vocabulary == "" and rec.extra == {}


def test_empty_candidates_file(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    write_candidates(path, [])
    assert path.read_bytes() == b""
    assert read_candidates(path) == []


GOOD = {"image": "a.jpg", "scores": {"cat": 0.5}, "kept": ["cat"], "subset": ["cat"], "subset_score": 0.2,
        "active": ["cat"]}


def _with(**kw) -> str:
    obj = {k: v for k, v in {**GOOD, **kw}.items() if v is not ...}
    return json.dumps(obj)


@pytest.mark.parametrize("bad_line, needle", [
    ('{"image": "a.jpg", "scores": {', "not valid JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    (_with(kept=...), "lacks 'kept'"),
    (_with(image=3), "'image' has the wrong type"),
    (_with(kept="cat"), "'kept' has the wrong type"),
    (_with(subset_score=True), "'subset_score' has the wrong type"),
    (_with(subset_score="0.2"), "'subset_score' has the wrong type"),
    (_with(scores=[0.5]), "'scores' has the wrong type"),
    (_with(scores={"cat": "high"}), "score of 'cat' is not a finite number"),
    (_with(scores={"cat": True}), "score of 'cat'"),
    ('{"image": "a", "scores": {"cat": NaN}, "kept": [], "subset": [], "subset_score": 0, "active": []}',
     "score of 'cat' is not a finite number"),
    ('{"image": "a", "scores": {"cat": Infinity}, "kept": [], "subset": [], "subset_score": 0, "active": []}',
     "score of 'cat'"),
    (_with(active=["cat", 3]), "'active' must list class names"),
], ids=["truncated", "array", "missing-key", "image-int", "kept-str", "score-bool", "score-str", "scores-list",
        "score-text", "score-true", "score-nan", "score-inf", "active-int"])
def test_candidates_bad_line_names_line_number(tmp_path: Path, bad_line, needle):
    path = tmp_path / "c.jsonl"
    path.write_text(_with() + "\n\n" + _with(image="b.jpg") + "\n" + bad_line + "\n" + _with() + "\n",
                    encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_candidates(path)
    one_line_with(e.value, str(path), "line 4", needle, "ovdiff classify")


def _latin1_line(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"image": "caf\xe9"}\n')
    return bad


@pytest.mark.parametrize("make, parts", [
    (lambda tmp: tmp / "none.jsonl", ["does not exist", "ovdiff classify"]),
    (_latin1_line, ["UTF-8"]),
], ids=["missing", "not-utf8"])
def test_candidates_missing_and_not_utf8(tmp_path: Path, make, parts: list[str]):
    path = make(tmp_path)
    with pytest.raises(BadFile) as e:
        read_candidates(path)
    one_line_with(e.value, str(path), *parts)


def test_candidates_writer_refuses_nan(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    bad = Candidates("a", {"cat": float("nan")}, [], [], 0.0, [])
    with pytest.raises(ValueError):
        write_candidates(path, [records()[0], bad])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        write_candidates(path, [Candidates("a", {}, [], [], float("inf"), [])])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("char", ["\u2028", "\x85"], ids=["U+2028", "NEL"])
def test_candidates_round_trip_unicode_line_separators(tmp_path: Path, char):
    rec = Candidates(f"photos/a{char}b.jpg", {"cat": 0.5}, ["cat"], ["cat"], 0.3, ["cat"], "voc")
    path = tmp_path / "c.jsonl"
    write_candidates(path, [rec])
    assert read_candidates(path) == [rec]


def test_candidates_reader_rejects_nan_subset_score(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"image": "a", "scores": {}, "kept": [], "subset": [], "subset_score": NaN, "active": []}\n',
                    encoding="utf-8")
    with pytest.raises(BadFile):
        read_candidates(path)
