"""mIoU as mmsegmentation computes it (docs/method.md §8): additive per-class counts over a whole split.

Per image, with v = (ground truth ≠ ignore): I_c += |pred = c ∧ gt = c ∧ v|, P_c += |pred = c ∧ v|,
L_c += |gt = c ∧ v|. IoU_c = I_c / (P_c + L_c − I_c) over the split, NaN when the class is in neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IGNORE = 255


@dataclass
class Counts:
    """I, P, L per class (int64 [K]) and the confusion matrix they come from; shards add up.

    ``confusion`` is int64 [K, K + 1]: row = ground-truth class, column = predicted class, the last
    column "no class" (predicted background under the no-background protocol, else 0). Its
    diagonal is I, its first K columns sum to P and its rows to L. None where it is unknown
    (counts merged from a ``score --json`` that does not record it); a sum with None is None.
    """

    intersection: np.ndarray
    pred: np.ndarray
    label: np.ndarray
    confusion: np.ndarray | None = None

    @classmethod
    def zeros(cls, k: int) -> Counts:
        z = np.zeros(k, np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros((k, k + 1), np.int64))

    def __add__(self, other: Counts) -> Counts:
        both = self.confusion is not None and other.confusion is not None
        return Counts(self.intersection + other.intersection, self.pred + other.pred, self.label + other.label,
                      self.confusion + other.confusion if both else None)

    @property
    def union(self) -> np.ndarray:
        return self.pred + self.label - self.intersection


def count(pred: np.ndarray, gt: np.ndarray, k: int, ignore: int = IGNORE, no_class: bool = False) -> Counts:
    """The counts of one image; pred and gt are integer [H, W] of the same shape, labels 0..255.

    Ground-truth ``ignore`` pixels are left out. With ``no_class``, a prediction of k means "no
    class" (background under the no-background protocol): it counts in L but in no P. Raises
    ValueError for a shape mismatch or a label outside 0..k−1 at a counted pixel.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction is {pred.shape[1]}×{pred.shape[0]}, ground truth {gt.shape[1]}×{gt.shape[0]}")
    g, p = np.asarray(gt), np.asarray(pred)
    if g.dtype != np.uint8 or p.dtype != np.uint8:
        if g.size and (g.min() < 0 or g.max() > 255 or p.min() < 0 or p.max() > 255):
            raise ValueError("labels must lie in 0..255")
        g, p = g.astype(np.uint8), p.astype(np.uint8)
    # One bincount over the (gt, pred) pairs of every pixel, as 16-bit codes gt·256 + pred: the full
    # 256 × 256 confusion matrix, from which the ignore row is dropped. Far cheaper than masking the
    # ignored pixels out first; label maps are bytes, so the codes fit 16 bits.
    codes = (g.astype(np.uint16) << 8) | p
    conf = np.bincount(codes.ravel(), minlength=256 * 256).reshape(256, 256)
    conf[ignore] = 0
    bad_gt = np.nonzero(conf[k:].sum(axis=1))[0]
    if bad_gt.size:
        raise ValueError(f"ground-truth label {int(bad_gt[0]) + k} is outside 0..{k - 1} (and not the ignore label "
                         f"{ignore})")
    first_bad = k + 1 if no_class else k
    bad_pred = np.nonzero(conf[:k, first_bad:].sum(axis=0))[0]
    if bad_pred.size:
        raise ValueError(f"predicted label {int(bad_pred[0]) + first_bad} is outside 0..{k - 1}")
    # Columns past k are empty after the checks above (and k itself unless no_class), so the rows
    # of cm sum to L. With k = 256 conf has no column k: cm's "no class" column stays 0.
    cm = np.zeros((k, k + 1), np.int64)
    n = min(k + 1, conf.shape[1])
    cm[:, :n] = conf[:k, :n]
    return Counts(np.diagonal(cm).copy(), cm[:, :k].sum(axis=0), cm.sum(axis=1), cm)


def metrics(c: Counts) -> dict[str, object]:
    """IoU and accuracy per class (NaN where undefined), mIoU over the defined classes, mean
    accuracy, overall accuracy, and the variant counting NaN classes as 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        union = c.union
        iou = np.where(union > 0, c.intersection / np.maximum(union, 1), np.nan)
        acc = np.where(c.label > 0, c.intersection / np.maximum(c.label, 1), np.nan)
    defined = ~np.isnan(iou)
    miou = float(iou[defined].mean()) if defined.any() else math.nan
    macc = float(np.nanmean(acc)) if (~np.isnan(acc)).any() else math.nan
    total = int(c.label.sum())
    return {"iou": iou, "acc": acc, "mIoU": miou, "mAcc": macc,
            "aAcc": float(c.intersection.sum() / total) if total else math.nan,
            "mIoU_nan_as_zero": float(np.nan_to_num(iou, nan=0.0).mean()) if iou.size else math.nan}


def confusion_rates(c: Counts) -> np.ndarray:
    """The row-normalised confusion matrix, float64 [K, K + 1]: each ground-truth class's pixels
    shared out over the predicted classes (last column: "no class"). A row sums to 1, or is NaN
    where the class has no ground-truth pixels. Raises ValueError when ``c`` has no confusion."""
    if c.confusion is None:
        raise ValueError("these counts do not record a confusion matrix")
    rows = c.confusion.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, c.confusion / np.maximum(rows, 1), np.nan)


def no_background(pred: np.ndarray, gt: np.ndarray, k: int, ignore: int = IGNORE) -> tuple[np.ndarray, np.ndarray]:
    """The no-background protocol over k classes: ground-truth 0 becomes ignore and the labels shift
    down by one; predictions 1..k shift down too, and a predicted 0 (background) becomes k: no class
    (count with ``no_class=True``). A prediction above k is an error (ValueError)."""
    if pred.size and int(pred.max()) > k:
        raise ValueError(f"predicted label {int(pred.max())} is outside 0..{k}")
    g = gt.astype(np.int64)
    g = np.where((g == 0) | (g == ignore), ignore, g - 1)
    p = pred.astype(np.int64) - 1
    return np.where(p < 0, k, p), g
