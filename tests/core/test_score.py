"""mIoU (docs/method.md §8) on label maps worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ovdiff_cli.core.score import Counts, count, metrics, no_background

GT = np.array([[0, 0, 1], [1, 255, 2]])
PRED = np.array([[0, 1, 1], [1, 3, 2]])


def test_counts_and_metrics_by_hand() -> None:
    c = count(PRED, GT, 4)
    # valid pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2); the ignored pixel's prediction 3 does not count
    assert c.intersection.tolist() == [1, 2, 1, 0]
    assert c.pred.tolist() == [1, 3, 1, 0]
    assert c.label.tolist() == [2, 2, 1, 0]
    assert c.union.tolist() == [2, 3, 1, 0]
    m = metrics(c)
    assert m["iou"][:3].tolist() == pytest.approx([0.5, 2 / 3, 1.0]) and math.isnan(m["iou"][3])
    assert m["mIoU"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)      # the absent class is left out
    assert m["mAcc"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["aAcc"] == pytest.approx(4 / 5)
    assert m["mIoU_nan_as_zero"] == pytest.approx((0.5 + 2 / 3 + 1 + 0) / 4)


def test_a_class_only_in_the_predictions_counts_as_zero() -> None:
    c = count(PRED, GT, 4) + count(np.array([[3]]), np.array([[2]]), 4)
    m = metrics(c)
    # class 2: I 1, P 1, L 2 → 1/2; class 3: I 0, P 1, L 0 → 0 (defined, so it pulls the mean down)
    assert m["iou"].tolist() == pytest.approx([0.5, 2 / 3, 0.5, 0.0])
    assert m["mIoU"] == pytest.approx((0.5 + 2 / 3 + 0.5 + 0) / 4)


def test_split_counts_add_up_like_one_image() -> None:
    whole = count(np.concatenate([PRED, PRED]), np.concatenate([GT, GT]), 4)
    halves = count(PRED, GT, 4) + count(PRED, GT, 4)
    assert whole.intersection.tolist() == halves.intersection.tolist()
    assert whole.union.tolist() == halves.union.tolist()


def test_errors_for_sizes_and_labels() -> None:
    with pytest.raises(ValueError, match="prediction is 3×2, ground truth 2×2"):
        count(PRED, GT[:, :2], 4)
    with pytest.raises(ValueError, match="ground-truth label 2"):
        count(PRED, GT, 2)
    with pytest.raises(ValueError, match="predicted label 3"):
        count(np.array([[3]]), np.array([[0]]), 2)


def test_an_empty_split_has_no_miou() -> None:
    m = metrics(Counts.zeros(3))
    assert math.isnan(m["mIoU"]) and math.isnan(m["aAcc"])


def test_the_no_background_protocol() -> None:
    pred, gt = no_background(np.array([[1, 2, 0, 2]]), np.array([[1, 0, 2, 255]]), 2)
    # ground truth: 1 → 0, 0 → ignore, 2 → 1, 255 stays; predictions shift, background becomes "no class" (2)
    assert gt.tolist() == [[0, 255, 1, 255]] and pred.tolist() == [[0, 1, 2, 1]]
    c = count(pred, gt, 2, no_class=True)
    assert c.intersection.tolist() == [1, 0] and c.pred.tolist() == [1, 0] and c.label.tolist() == [1, 1]


def test_a_prediction_equal_to_the_label_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="predicted label 4"):
        count(np.array([[4]]), np.array([[0]]), 4)
    # under the no-background protocol k is "no class", k + 1 an error, before any shift
    with pytest.raises(ValueError, match="predicted label 3"):
        no_background(np.array([[3]]), np.array([[1]]), 2)
    c = count(*no_background(np.array([[0]]), np.array([[1]]), 2), 2, no_class=True)
    assert c.label.tolist() == [1, 0] and c.pred.tolist() == [0, 0]


def test_the_confusion_matrix_by_hand() -> None:
    from ovdiff_cli.core.score import confusion_rates

    c = count(PRED, GT, 4)
    # (gt, pred) pairs as above: row = ground truth, column = prediction, last column "no class"
    assert c.confusion.tolist() == [[1, 1, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    rates = confusion_rates(c + c)  # doubling the counts leaves the shares as they are
    assert rates[:3].tolist() == [[0.5, 0.5, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
    assert np.isnan(rates[3]).all()  # class 3 has no ground-truth pixels
    # under the no-background protocol a predicted background lands in the "no class" column
    pred, gt = no_background(np.array([[1, 2, 0, 2]]), np.array([[1, 0, 2, 255]]), 2)
    assert count(pred, gt, 2, no_class=True).confusion.tolist() == [[1, 0, 0], [0, 0, 1]]
    # counts without a confusion matrix (merged from old JSON) add up to counts without one
    old = Counts(c.intersection, c.pred, c.label)
    assert (old + c).confusion is None and (old + c).intersection.tolist() == [2, 4, 2, 0]
    with pytest.raises(ValueError, match="confusion"):
        confusion_rates(old)
