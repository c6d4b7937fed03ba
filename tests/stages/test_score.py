"""`ovdiff score` through the command line: folders, datasets by name, the table and JSON, warnings,
errors, shards and their merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.formats.datasets import open_dataset
from ovdiff_cli.formats.labelmap import write_label_map
from tests.stages.test_sample import one_line_error

GT = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)
PRED = np.array([[0, 1, 1], [1, 3, 2]], np.uint8)


def maps(folder: Path, items: dict[str, np.ndarray], meta: dict | None = None) -> Path:
    for stem, a in items.items():
        write_label_map(folder / f"{stem}.png", a, meta)
    return folder


def run(runner, *args: str):
    return runner.invoke(main, ["score", *args])


def test_json_by_hand(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED})
    write_label_map(pred / "a.overlay.png", PRED)  # a side file of segment: not a prediction
    gt = maps(tmp_path / "gt", {"a": GT})
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["classes"] == ["background", "cat", "dog", "sky"]
    assert d["iou"][:3] == pytest.approx([0.5, 2 / 3, 1.0]) and d["iou"][3] is None
    assert d["mIoU"] == pytest.approx((0.5 + 2 / 3 + 1) / 3) and d["aAcc"] == pytest.approx(0.8)
    assert d["intersection"] == [1, 2, 1, 0] and d["union"] == [2, 3, 1, 0] and d["images"] == 1
    assert d["protocol"]["ignore_label"] == 255 and d["warnings"] == {}


def test_the_table(runner, tmp_path: Path) -> None:
    pred, gt = maps(tmp_path / "pred", {"a": PRED}), maps(tmp_path / "gt", {"a": GT})
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--nan-as-zero")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]] for line in lines if "│" in line}
    assert row["background"] == ["50.0", "50.0", "2"]
    assert row["cat"] == ["66.7", "100.0", "2"]
    assert row["sky"] == ["–", "–", "0"]
    assert any("mIoU 72.2" in line for line in lines)
    assert any("undefined classes as 0: 54.2" in line for line in lines)


def test_the_vocabulary_comes_from_the_predictions(runner, tmp_path: Path) -> None:
    from ovdiff_cli.formats.vocabulary import from_words

    meta = {"vocabulary": from_words(["cat", "dog", "sky"]).to_meta()}
    pred, gt = maps(tmp_path / "pred", {"a": PRED}, meta), maps(tmp_path / "gt", {"a": GT})
    d = json.loads(run(runner, str(pred), str(gt), "--json").stdout)
    assert d["classes"] == ["background", "cat", "dog", "sky"]
    plain = maps(tmp_path / "plain", {"a": PRED})
    line = one_line_error(run(runner, str(plain), str(gt)))
    assert "--vocab" in line


def test_missing_and_extra_predictions_warn_or_fail_with_strict(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED, "extra": PRED})
    gt = maps(tmp_path / "gt", {"a": GT, "b": GT, "c": GT})
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["warnings"] == {"missing_predictions": 2, "extra_predictions": 1} and d["images"] == 1
    assert "2 ground truths have no prediction" in result.stderr
    line = one_line_error(run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--strict"))
    assert "2 ground truths have no prediction" in line


def test_sizes_and_labels_that_do_not_fit_are_one_line(runner, tmp_path: Path) -> None:
    gt = maps(tmp_path / "gt", {"a": GT})
    small = maps(tmp_path / "small", {"a": PRED[:, :2].copy()})
    line = one_line_error(run(runner, str(small), str(gt), "--vocab", "cat,dog,sky"))
    assert "small/a.png" in line and "2×2" in line and "3×2" in line
    pred = maps(tmp_path / "pred", {"a": PRED})
    line = one_line_error(run(runner, str(pred), str(gt), "--vocab", "cat,"))
    assert "gt/a.png" in line and "ground-truth label 2" in line


def test_no_background(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": np.array([[1, 2, 0, 2]], np.uint8)})
    gt = maps(tmp_path / "gt", {"a": np.array([[1, 0, 2, 255]], np.uint8)})
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog", "--no-background", "--json")
    d = json.loads(result.stdout)
    assert d["classes"] == ["cat", "dog"]
    assert d["intersection"] == [1, 0] and d["label"] == [1, 1] and d["warnings"] == {"background_predictions": 1}


def test_shards_merge_into_the_whole(runner, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = {f"i{k}": rng.integers(0, 4, (5, 6)).astype(np.uint8) for k in range(5)}
    truths = {k: np.where(rng.random((5, 6)) < 0.1, 255, rng.integers(0, 4, (5, 6))).astype(np.uint8)
              for k in items}
    pred, gt = maps(tmp_path / "pred", items), maps(tmp_path / "gt", truths)
    args = [str(pred), str(gt), "--vocab", "a,b,c", "--json"]
    whole = json.loads(run(runner, *args).stdout)
    parts = []
    for k in (1, 2):
        f = tmp_path / f"shard{k}.json"
        f.write_text(run(runner, *args, "--shard", f"{k}/2").stdout)
        parts.append(str(f))
    merged = json.loads(run(runner, "--merge", *parts, "--json").stdout)
    assert merged["intersection"] == whole["intersection"] and merged["union"] == whole["union"]
    assert merged["mIoU"] == pytest.approx(whole["mIoU"]) and merged["images"] == 5


def voc_tree(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    for i in ("2007_000033", "2007_000042"):
        (base / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(base / "JPEGImages" / f"{i}.jpg")
        write_label_map(base / "SegmentationClass" / f"{i}.png", GT)
    return base


def test_dataset_readers(tmp_path: Path) -> None:
    base = voc_tree(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", base):
        ds = open_dataset("voc", root)
        assert ds.root == base and [i for i, _, _ in ds.items] == ["2007_000033", "2007_000042"]
        assert ds.items[0][1] == base / "JPEGImages" / "2007_000033.jpg" and ds.vocabulary == "voc"
    ctx = tmp_path / "ctx" / "VOCdevkit" / "VOC2010"
    (ctx / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (ctx / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    (ctx / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(ctx / "JPEGImages" / "2008_000002.jpg")
    write_label_map(ctx / "SegmentationClassContext" / "2008_000002.png", np.zeros((2, 2), np.uint8))
    assert open_dataset("context", tmp_path / "ctx").background and not open_dataset("context59", ctx).background
    coco = tmp_path / "coco"
    (coco / "images" / "val2017").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(coco / "images" / "val2017" / "000000000139.jpg")
    write_label_map(coco / "annotations" / "val2017" / "000000000139_instanceTrainIds.png", np.zeros((2, 2), np.uint8))
    ds = open_dataset("coco-object", coco)
    assert [i for i, _, _ in ds.items] == ["000000000139"] and ds.vocabulary == "coco-object"
    (base / "JPEGImages" / "2007_000042.jpg").unlink()
    with pytest.raises(Exception, match="2007_000042.jpg"):
        open_dataset("voc", tmp_path)


def test_score_a_dataset_by_name(runner, tmp_path: Path) -> None:
    voc_tree(tmp_path)
    pred = maps(tmp_path / "pred", {"2007_000033": PRED, "2007_000042": GT})
    result = run(runner, str(pred), str(tmp_path), "--dataset", "voc", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert len(d["classes"]) == 21 and d["protocol"]["dataset"] == "voc" and d["images"] == 2
    assert d["intersection"][:3] == [1 + 2, 2 + 2, 1 + 1]


def test_merging_something_else_is_one_line(runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"intersection": [1], "pred": [1], "label": [1]}))
    line = one_line_error(run(runner, "--merge", str(bad)))
    assert "bad.json" in line and "score --json" in line
