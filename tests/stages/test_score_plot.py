"""`ovdiff score --plot`: what the figure draws (read back from its artists), its size rule, the
PNG the command writes, paths it refuses, and matplotlib staying unimported without --plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdiff_cli.core import score as core
from ovdiff_cli.formats.labelmap import write_label_map
from ovdiff_cli.formats.provenance import ovdiff_schema
from ovdiff_cli.stages.score import Report
from tests.helpers import one_line_error, run

GT = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)
PRED = np.array([[0, 1, 1], [1, 3, 2]], np.uint8)
NAMES = ["background", "cat", "dog", "sky"]
# By hand: (gt, pred) pairs (0,0) (0,1) (1,1) (1,1) (2,2) → IoU background 1/2, cat 2/3, dog 1, sky undefined.
MIOU = (1 / 2 + 2 / 3 + 1) / 3


def report(names: list[str], counts: core.Counts) -> Report:
    return Report(names, counts, {"dataset": None}, 1)


def the_axes(fig):
    bars, matrix = fig.axes[0], fig.axes[1]
    return bars, matrix


def test_the_figure_sorts_the_bars_draws_the_miou_and_row_normalised_rates() -> None:
    from ovdiff_cli.stages.score_plot import figure

    plot = figure(report(NAMES, core.count(PRED, GT, 4)))
    bars, matrix = the_axes(plot.figure)
    # bars top to bottom: best IoU first, the undefined class last
    assert [t.get_text() for t in bars.get_yticklabels()] == ["dog", "cat", "background", "sky"]
    widths = [p.get_width() for p in bars.patches]
    assert widths == pytest.approx([100, 200 / 3, 50, 0])
    assert bars.get_ylim()[0] > bars.get_ylim()[1]  # the first row is on top
    assert list(plot.miou_line.get_xdata()) == pytest.approx([100 * MIOU] * 2)
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["mIoU 72.2"]
    # the matrix in vocabulary order, rows = ground truth; no "no class" column without predictions of it
    assert [t.get_text() for t in matrix.get_xticklabels()] == NAMES
    assert [t.get_text() for t in matrix.get_yticklabels()] == NAMES
    drawn = matrix.get_images()[0].get_array()
    assert drawn[:3].filled(-1).tolist() == [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert drawn.sum(axis=1)[:3].tolist() == [1, 1, 1] and drawn.mask[3].all()  # sky: no ground truth
    cells = sorted(t.get_text() for t in matrix.texts)  # percentages written in the non-zero cells
    assert cells == ["100", "100", "50", "50"]


def test_a_no_class_column_under_the_no_background_protocol() -> None:
    from ovdiff_cli.stages.score_plot import NO_CLASS, figure

    pred, gt = core.no_background(np.array([[1, 2, 0, 2]]), np.array([[1, 0, 2, 255]]), 2)
    plot = figure(report(["cat", "dog"], core.count(pred, gt, 2, no_class=True)))
    _, matrix = the_axes(plot.figure)
    assert [t.get_text() for t in matrix.get_xticklabels()] == ["cat", "dog", NO_CLASS]
    # dog's one pixel was predicted background: all of its row is in the last column
    assert matrix.get_images()[0].get_array().tolist() == [[1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("k, height", [(21, 1620), (60, 2400)])
def test_the_size_rule(k: int, height: int) -> None:
    """1200 px wide, 1200 + 20 px per class high: 21 VOC classes and 60 Context classes (the
    canvas size is what Agg renders; the command's test reads a written PNG's size back)."""
    from ovdiff_cli.stages.score_plot import figure, plot_size

    assert plot_size(k) == (1200, height)
    rng = np.random.default_rng(0)
    gt = rng.integers(0, k, (30, 40)).astype(np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.5, gt, rng.integers(0, k, gt.shape)).astype(np.uint8)
    plot = figure(report([f"class {i}" for i in range(k)], core.count(pred, gt, k)))
    assert plot.figure.canvas.get_width_height() == (1200, height)
    # cells carry their percentages for 21 classes, not for 60 (too small to read)
    assert len(plot.figure.axes[1].texts) == (np.count_nonzero(plot.rates >= 0.005) if k == 21 else 0)


def maps(folder: Path, items: dict[str, np.ndarray]) -> Path:
    for stem, a in items.items():
        write_label_map(folder / f"{stem}.png", a)
    return folder


def test_score_plot_writes_the_png(runner, tmp_path: Path) -> None:
    pred, gt = maps(tmp_path / "pred", {"a": PRED}), maps(tmp_path / "gt", {"a": GT})
    out = pred / "miou.png"  # among the predictions: the second run replaces it and does not score it
    for _ in range(2):
        result = run(runner, "score", str(pred), str(gt), "--vocab", "cat,dog,sky", "--json", "--plot", str(out))
        assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)  # stdout stays JSON only
    assert d["warnings"] == {} and d["images"] == 1  # the plot is no extra prediction
    assert d["confusion"] == [[1, 1, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert "miou.png" in result.stderr
    with Image.open(out) as im:
        assert im.size == (1200, 1200 + 20 * 4) and im.mode == "RGB"
    schema, meta = ovdiff_schema(out)
    assert schema == "ovdiff.score-plot/1" and meta["mIoU"] == pytest.approx(MIOU) and meta["classes"] == NAMES
    assert sorted(p.name for p in pred.iterdir()) == ["a.png", "miou.png"]  # no temporary file left


# Each row: the --plot path (under tmp_path), the exit code (2: a bad option value) and the parts of the one line.
@pytest.mark.parametrize("where, code, parts", [
    ("plot.jpg", 2, ["plot.jpg", "ending in .png"]),
    ("folder.png", 2, ["folder.png", "is a directory"]),
    ("photo.png", 1, ["photo.png", "not written by ovdiff", "another --plot path", "move the file away"]),
    ("photo.png/plot.png", 1, ["photo.png", "is a file", "another --plot"]),
], ids=["not-png", "a-folder", "a-foreign-file", "below-a-file"])
def test_bad_plot_paths_are_one_line_before_any_work(runner, tmp_path: Path, where: str, code: int,
                                                     parts: list[str]) -> None:
    (tmp_path / "folder.png").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "photo.png")
    before = (tmp_path / "photo.png").read_bytes()
    # the prediction folder does not exist: an error about it would mean the plot path was checked late
    result = run(runner, "score", str(tmp_path / "none"), str(tmp_path / "none"), "--vocab", "cat",
                 "--plot", str(tmp_path / where))
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovdiff: error: ") and all(p in lines[0] for p in parts), lines
    assert (tmp_path / "photo.png").read_bytes() == before and not (tmp_path / "plot.jpg").exists()


def test_merged_scores_without_a_confusion_matrix_cannot_be_plotted(runner, tmp_path: Path) -> None:
    old = tmp_path / "old.json"  # as `score --json` wrote it before the confusion matrix was recorded
    old.write_text(json.dumps({"protocol": {}, "images": 1, "classes": ["background", "cat"], "intersection": [1, 1],
                               "pred": [1, 1], "label": [1, 1], "warnings": {}}))
    assert run(runner, "score", "--merge", str(old), "--json").exit_code == 0
    line = one_line_error(run(runner, "score", "--merge", str(old), "--plot", str(tmp_path / "p.png")))
    assert "confusion matrix" in line and "score the label maps again" in line
    assert not (tmp_path / "p.png").exists()


def test_score_without_plot_does_not_import_matplotlib(tmp_path: Path) -> None:
    pred, gt = maps(tmp_path / "pred", {"a": PRED}), maps(tmp_path / "gt", {"a": GT})
    code = ("import sys; from ovdiff_cli.cli import main\n"
            f"main(['score', {str(pred)!r}, {str(gt)!r}, '--vocab', 'cat,dog,sky', '--json'], standalone_mode=False)\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False"
