"""``score --plot``: a score report as one PNG, per-class IoU bars above the confusion matrix.

The top panel has one horizontal bar per class, sorted by IoU (best on top; classes whose IoU is
undefined last, marked "–"), with the mIoU as a dashed vertical line. Below it is the
row-normalised confusion matrix in vocabulary order: row = ground-truth class, column =
predicted class, each row the share of that class's pixels (grey: no ground-truth pixels).

Size rule: 1200 pixels wide, 1200 + 20·K high for K classes (rows of 20 px in the bar panel and a
900 px matrix, whatever K), so 21 VOC classes give 1200 × 1620 and 60 Context classes
1200 × 2400. Fonts shrink with the matrix cells, and cells carry their percentages up to
``ANNOTATE_UP_TO`` classes.

matplotlib is imported only here, and this module only when a plot is asked for. It renders
through the Agg canvas on a ``Figure`` of its own: no pyplot, no display, no global backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovdiff_cli.core import score as core
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.images import write_rgb_png
from ovdiff_cli.formats.lock import locked

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ovdiff_cli.stages.score import Report

#: The schema in the plot's ``ovdiff`` PNG text chunk: a later --plot may replace such a picture,
#: never any other file, and score does not take it for a prediction.
PLOT_SCHEMA = "ovdiff.score-plot/1"

DPI = 100
WIDTH_IN = 12.0
ROW_IN = 0.2        # one bar of the IoU panel
MATRIX_IN = 9.0     # the confusion matrix's side, whatever the class count
LEFT_IN = 1.9       # class names left of both panels
TOP_IN = 0.6        # the title and the bar panel's heading
GAP_IN = 1.0        # the bar panel's axis, then the matrix's heading
BOTTOM_IN = 1.4     # the matrix's column names (rotated) and axis label
ANNOTATE_UP_TO = 30  # write percentages in the matrix cells up to this many classes

BAR_COLOUR = "#4c72b0"
MIOU_COLOUR = "#c44e52"
NO_CLASS = "(no class)"


def plot_size(k: int) -> tuple[int, int]:
    """(width, height) in pixels of the plot of ``k`` classes."""
    return round(WIDTH_IN * DPI), round(_height_in(k) * DPI)


def _height_in(k: int) -> float:
    return TOP_IN + ROW_IN * k + GAP_IN + MATRIX_IN + BOTTOM_IN


@dataclass
class Plot:
    """The figure and what it shows, for callers that check or extend it.

    ``order`` is the classes top to bottom in the bar panel, ``iou`` their IoUs in % (NaN:
    undefined), ``miou_line`` the mIoU line (None when no IoU is defined), ``rates`` the matrix
    drawn (float [K, K] or [K, K + 1] with a "no class" column; NaN rows: no ground truth) and
    ``columns`` its column names.
    """

    figure: Figure
    order: list[str]
    iou: list[float]
    miou_line: Line2D | None
    rates: np.ndarray
    columns: list[str]


def figure(report: Report) -> Plot:
    """Draw ``report`` (its counts must hold the confusion matrix) on a new Agg figure."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    if report.counts.confusion is None:
        raise BadInput("the scores hold no confusion matrix (merged from `score --json` files of an older ovdiff)",
                       "score the label maps again to plot them")
    names, k = list(report.names), len(report.names)
    m = core.metrics(report.counts)
    iou = 100 * np.asarray(m["iou"], np.float64)
    miou = float(m["mIoU"])
    rates = core.confusion_rates(report.counts)
    columns = [*names, NO_CLASS]
    if not np.any(report.counts.confusion[:, k]):  # the "no class" column only under the no-background protocol
        rates, columns = rates[:, :k], names

    fig = Figure(figsize=(WIDTH_IN, _height_in(k)), dpi=DPI)
    FigureCanvasAgg(fig)
    height = _height_in(k)
    small = min(9.0, 0.7 * 72 * MATRIX_IN / len(columns))  # points: a tick label fits its matrix cell

    def box(top: float, h: float, left: float = LEFT_IN, w: float = MATRIX_IN) -> list[float]:
        """A figure rectangle from inches measured from the top-left corner."""
        return [left / WIDTH_IN, 1 - (top + h) / height, w / WIDTH_IN, h / height]

    n = report.images
    where = report.protocol.get("dataset") or "ovdiff score"
    fig.suptitle(f"{where}: {n:,} image{'' if n == 1 else 's'}, {k} classes, mIoU {_pct(miou)}",
                 y=1 - 0.12 / height, va="top", fontsize=12)

    # Bars: defined IoUs best first (ties keep the vocabulary's order), then the undefined ones.
    ranked = sorted(range(k), key=lambda i: (math.isnan(iou[i]), -np.nan_to_num(iou[i])))
    order = [names[i] for i in ranked]
    values = [float(iou[i]) for i in ranked]
    bars = fig.add_axes(box(TOP_IN, ROW_IN * k))
    y = np.arange(k)
    bars.barh(y, np.nan_to_num(values), height=0.75, color=BAR_COLOUR)
    for row, v in zip(y, values):
        # on white, so the mIoU line crossing a value does not hide it
        bars.text((0 if math.isnan(v) else v) + 0.8, row, _pct(v / 100), va="center", fontsize=7, zorder=3,
                  bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    bars.set_yticks(y, order, fontsize=8)
    for label, v in zip(bars.get_yticklabels(), values):
        if math.isnan(v):
            label.set_color("grey")
    bars.set_ylim(k - 0.5, -0.5)  # first row on top
    bars.set_xlim(0, 100)
    bars.set_xlabel("IoU (%)", fontsize=9)
    bars.tick_params(axis="x", labelsize=8)
    undefined = " (– : in neither ground truth nor predictions)" if any(math.isnan(v) for v in values) else ""
    bars.set_title(f"per-class IoU, sorted{undefined}", fontsize=10, loc="left")
    miou_line = None
    if not math.isnan(miou):
        miou_line = bars.axvline(100 * miou, color=MIOU_COLOUR, linestyle="--", linewidth=1.5,
                                 label=f"mIoU {_pct(miou)}")
        bars.legend(loc="lower right", fontsize=9)

    # The matrix: NaN rows (no ground-truth pixels) drawn in the colour map's "bad" grey.
    matrix = fig.add_axes(box(TOP_IN + ROW_IN * k + GAP_IN, MATRIX_IN))
    cmap = colormaps["Blues"].with_extremes(bad="#dddddd")
    # A square-root scale: confusions of a few percent, the ones worth reading off, still show.
    image = matrix.imshow(np.ma.masked_invalid(rates), cmap=cmap, norm=PowerNorm(0.5, vmin=0, vmax=1),
                          aspect="auto", interpolation="nearest")
    matrix.set_xticks(np.arange(len(columns)), columns, rotation=90, fontsize=small)
    matrix.set_yticks(np.arange(k), names, fontsize=small)
    matrix.set_xlabel("predicted class", fontsize=9)
    matrix.set_ylabel("ground-truth class", fontsize=9)
    grey = " (grey: none)" if np.isnan(rates).any() else ""
    matrix.set_title(f"confusion matrix, each row the share of that class's ground-truth pixels{grey}", fontsize=10,
                     loc="left")
    if k <= ANNOTATE_UP_TO:
        for r, c in zip(*np.nonzero(np.nan_to_num(rates) >= 0.005)):
            v = rates[r, c]
            matrix.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=min(small, 7),
                        color="white" if v > 0.35 else "black")
    bar = fig.add_axes(box(TOP_IN + ROW_IN * k + GAP_IN, MATRIX_IN, left=LEFT_IN + MATRIX_IN + 0.15, w=0.25))
    fig.colorbar(image, cax=bar, format=PercentFormatter(1.0, decimals=0))
    bar.tick_params(labelsize=8)
    return Plot(fig, order, values, miou_line, rates, list(columns))


def render(plot: Plot) -> np.ndarray:
    """The figure's pixels, uint8 RGB [H, W, 3] (H, W as ``plot_size``)."""
    canvas = plot.figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def check_plot(path: Path) -> None:
    """Refuse, before any work, a --plot path that cannot take the picture: a folder, a file that
    is not an earlier score plot, or a path below a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadFile(parent, "is a file, so the plot cannot go below it", fix="choose another --plot path")
            break
    provenance.check_replaceable(path, PLOT_SCHEMA, "score")


def write_plot(path: Path, report: Report) -> Path:
    """Draw and write the plot atomically; an earlier score plot there is replaced, nothing else is."""
    pixels = render(figure(report))
    m = core.metrics(report.counts)
    meta: dict[str, Any] = {"schema": PLOT_SCHEMA, "classes": list(report.names), "images": report.images,
                            "mIoU": None if math.isnan(m["mIoU"]) else m["mIoU"], "protocol": report.protocol}
    with locked(path):
        check_plot(path)
        return write_rgb_png(path, pixels, meta)


def _pct(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:.1f}"
