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
from ovdiff_cli.formats.images import write_rgb_png
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, OVERLAY_SCHEMA, write_label_map
from tests.helpers import one_line_error, write_rg_bank

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
    # a side file of segment, told by its metadata: not a prediction
    write_rgb_png(pred / "a.overlay.png", np.zeros((2, 3, 3), np.uint8), {"schema": OVERLAY_SCHEMA})
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


# Each row: the prediction written (tmp_path/pred/a.png), --vocab, and the parts the one error line must hold.
@pytest.mark.parametrize("pred, vocab, parts", [
    (PRED[:, :2].copy(), "cat,dog,sky", ["pred/a.png", "2×2", "3×2"]),
    (PRED, "cat,", ["gt/a.png", "ground-truth label 2"]),
], ids=["other-size", "label-beyond-the-vocabulary"])
def test_sizes_and_labels_that_do_not_fit_are_one_line(runner, tmp_path: Path, pred: np.ndarray, vocab: str,
                                                        parts: list[str]) -> None:
    gt = maps(tmp_path / "gt", {"a": GT})
    preds = maps(tmp_path / "pred", {"a": pred})
    result = run(runner, str(preds), str(gt), "--vocab", vocab)
    line = one_line_error(result)
    assert all(part in line for part in parts), line
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred"]


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
    assert merged["confusion"] == whole["confusion"] and np.sum(whole["confusion"]) == sum(whole["label"])
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


def vocab_meta(*names: str) -> dict:
    from ovdiff_cli.formats.vocabulary import from_words

    return {"schema": LABELMAP_SCHEMA, "vocabulary": from_words(list(names)).to_meta()}


NINE = [f"c{i}" for i in range(9)]


# Each row: the prediction's recorded vocabulary, --vocab, and the parts the one error line must hold.
@pytest.mark.parametrize("names, vocab, parts", [
    (["cat", "dog", "sky"], "dog,cat,sky",
     ["pred/a.png", "['cat', 'dog', 'sky']", "['dog', 'cat', 'sky']", "label 1 is 'cat' there, 'dog' in --vocab"]),
    (["cat", "dog", "sky"], "cat,dog", ["3 classes there, 2 in --vocab"]),  # a prefix is another vocabulary
    # beyond the names the message lists
    (NINE, ",".join(NINE[:8] + ["other"]), ["pred/a.png", "label 9 is 'c8' there, 'other' in --vocab"]),
], ids=["another-order", "a-prefix", "the-ninth-name"])
def test_vocab_must_be_the_predictions_order_included(runner, tmp_path: Path, names: list[str], vocab: str,
                                                       parts: list[str]) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED}, vocab_meta(*names))
    gt = maps(tmp_path / "gt", {"a": GT})
    result = run(runner, str(pred), str(gt), "--vocab", vocab)
    line = one_line_error(result)
    assert all(part in line for part in parts), line
    assert result.stdout == ""


def test_vocab_in_the_predictions_order_is_scored(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED}, vocab_meta("cat", "dog", "sky"))
    gt = maps(tmp_path / "gt", {"a": GT})
    d = json.loads(run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--json").stdout)
    assert d["classes"] == ["background", "cat", "dog", "sky"] and d["intersection"] == [1, 2, 1, 0]


def test_predictions_of_two_vocabularies_are_refused(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED}, vocab_meta("cat", "dog", "sky"))
    maps(pred, {"b": PRED}, vocab_meta("dog", "cat", "sky"))
    gt = maps(tmp_path / "gt", {"a": GT, "b": GT})
    line = one_line_error(run(runner, str(pred), str(gt)))
    assert "pred/b.png" in line and "pred/a.png" in line


@pytest.mark.parametrize("extra, parts", [
    ([], ["2007_000033.png", "the dataset (voc)"]),
    (["--vocab", "cat,dog,sky"], ["--vocab", "dataset"]),
], ids=["the-datasets-vocabulary", "vocab-with-a-dataset"])
def test_the_dataset_vocabulary_is_checked_against_the_predictions(runner, tmp_path: Path, extra: list[str],
                                                                   parts: list[str]) -> None:
    voc_tree(tmp_path)
    pred = maps(tmp_path / "pred", {"2007_000033": PRED, "2007_000042": GT}, vocab_meta("cat", "dog", "sky"))
    result = run(runner, str(pred), str(tmp_path), "--dataset", "voc", *extra)
    line = one_line_error(result)
    assert all(part in line for part in parts), line
    assert result.stdout == ""


@pytest.mark.parametrize("make", ["empty", "other-names", "only-pictures"])
def test_nothing_to_score_is_an_error(runner, tmp_path: Path, make: str) -> None:
    gt = maps(tmp_path / "gt", {"a": GT})
    pred = tmp_path / "pred"
    pred.mkdir()
    if make == "other-names":
        maps(pred, {"b": PRED})
    if make == "only-pictures":
        write_rgb_png(pred / "a.png", np.zeros((2, 3, 3), np.uint8), {"schema": OVERLAY_SCHEMA})
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--json")
    line = one_line_error(result)
    assert result.stdout == "" and "mIoU" not in line and "pred" in line


@pytest.mark.parametrize("vocabulary", [
    5, "cat,dog", {"a": 1}, [["cat", "cat", "thing"]], {"name": "v"}, {"classes": [["cat", "cat", "thing"]]},
    {"name": "v", "classes": [[1, 2, 3]]}, {"name": "v", "classes": [["cat", "cat"]]},
    {"name": "v", "classes": [[["cat"], "cat", "thing"]]}, {"name": "v", "classes": []},
    {"name": "v", "classes": [["cat", "cat", "plant"]]}, None,
], ids=["number", "string", "dict", "bare-list", "no-classes", "no-name", "numbers", "two-fields", "nested",
        "empty", "bad-kind", "null"])
@pytest.mark.parametrize("extra", [[], ["--vocab", "cat,dog,sky"]], ids=["alone", "with-vocab"])
def test_malformed_recorded_vocabularies_are_one_line(runner, tmp_path: Path, vocabulary, extra: list[str]) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED}, {"schema": LABELMAP_SCHEMA, "vocabulary": vocabulary})
    gt = maps(tmp_path / "gt", {"a": GT})
    result = run(runner, str(pred), str(gt), *extra, "--json")
    # null too: a label map ovdiff wrote always records its vocabulary, so this one was edited
    line = one_line_error(result)
    assert "pred/a.png" in line and "vocabulary" in line and "Traceback" not in result.output


def test_predictions_are_told_by_metadata_not_by_name(runner, tmp_path: Path) -> None:
    """A real prediction named a.overlay.png is scored; overlay and explain pictures of any name are not."""
    pred = maps(tmp_path / "pred", {"a.overlay": PRED}, vocab_meta("cat", "dog", "sky"))
    maps(pred, {"b": PRED})  # a label map without ovdiff metadata: a prediction
    write_rgb_png(pred / "c.png", np.zeros((2, 3, 3), np.uint8), {"schema": OVERLAY_SCHEMA})
    write_rgb_png(pred / "a.explain.png", np.zeros((9, 9, 3), np.uint8), {"schema": "ovdiff.explain-picture/1"})
    gt = maps(tmp_path / "gt", {"a.overlay": GT, "b": GT, "c": GT})
    result = run(runner, str(pred), str(gt), "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["images"] == 2 and d["intersection"] == [2, 4, 2, 0]  # PRED against GT twice
    assert d["warnings"] == {"missing_predictions": 1}


def test_list_files_take_paths_verbatim(runner, tmp_path: Path) -> None:
    """Lines of a list file lose only their line end: names with leading or trailing spaces are found."""
    pred = maps(tmp_path / "pred", {" a": PRED, "b ": PRED})
    gt = maps(tmp_path / "gt", {" a": GT, "b ": GT})
    lists = []
    for folder in (pred, gt):
        f = tmp_path / f"{folder.name}.txt"
        f.write_bytes(f"{folder / ' a.png'}\r\n{folder / 'b .png'}\n\n".encode())
        lists.append(str(f))
    result = run(runner, *lists, "--vocab", "cat,dog,sky", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 2


def test_a_binary_file_is_not_a_list(runner, tmp_path: Path) -> None:
    gt = maps(tmp_path / "gt", {"a": GT})
    photo = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(photo)
    line = one_line_error(run(runner, str(photo), str(gt), "--vocab", "cat,dog,sky"))
    assert "a.jpg" in line and "text file" in line


def test_score_of_segment_outputs_scores_maps_and_skips_overlays(runner, colour_preset,
                                                                 tmp_path: Path) -> None:
    """Segment's own files: a label map named a.overlay.png is a prediction, b's overlay is not."""
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12, 0] = 255
    rgb[:, 12:, 1] = 255
    (tmp_path / "in").mkdir()
    for name in ("a.overlay", "b"):
        Image.fromarray(rgb).save(tmp_path / "in" / f"{name}.png")
    bank, seg = write_rg_bank(tmp_path / "banks"), tmp_path / "seg"
    base = ["segment", "--bank", str(bank), "--no-prefilter", "--models", "colour", "--short-side", "16",
            "-o", str(seg)]
    assert runner.invoke(main, [*base, str(tmp_path / "in" / "a.overlay.png")]).exit_code == 0
    assert runner.invoke(main, [*base, str(tmp_path / "in" / "b.png"), "--overlay"]).exit_code == 0
    assert sorted(p.name for p in seg.glob("*.png")) == ["a.overlay.png", "b.overlay.png", "b.png"]
    gt = maps(tmp_path / "gt", {"a.overlay": np.zeros((16, 24), np.uint8), "b": np.zeros((16, 24), np.uint8)})
    result = run(runner, str(seg), str(gt), "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["images"] == 2 and d["warnings"] == {} and d["classes"] == ["background", "red", "green"]
    assert d["label"] == [2 * 16 * 24, 0, 0]


def test_a_map_from_elsewhere_without_a_vocabulary_needs_vocab(runner, tmp_path: Path) -> None:
    pred = maps(tmp_path / "pred", {"a": PRED}, {"note": "another tool's map"})
    gt = maps(tmp_path / "gt", {"a": GT})
    assert "pass --vocab" in one_line_error(run(runner, str(pred), str(gt)))
    result = run(runner, str(pred), str(gt), "--vocab", "cat,dog,sky", "--json")
    assert result.exit_code == 0, result.output
