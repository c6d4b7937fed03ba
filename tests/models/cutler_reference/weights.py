"""Deterministic random weights for CutLER's cascade detector, the same on every machine.

The reference outputs in ``fixture_ref.npz`` were computed by detectron2 on these weights; a test
rebuilds them here instead of storing a 287 MB checkpoint. Each tensor comes from its own numpy
legacy ``RandomState`` (a frozen stream), seeded with ``crc32(key) + seed`` modulo 2**32. The
scales keep activations of order one without calibrating the batch norms (N(0, s) is a normal
with standard deviation s):

- batch norm: weight U(0.8, 1.2), bias N(0, 0.05), running mean N(0, 0.05), running var
  U(0.8, 1.2); ``num_batches_tracked`` is an int64 zero;
- other biases N(0, 0.02);
- classification, objectness and mask-prediction weights N(0, 0.05); box and anchor deltas N(0, 0.01);
- every other conv, linear or deconv weight N(0, √(gain / fan_in)): fan_in is the product of the
  dimensions after the first (the first dimension for a deconv, whose layout is [in, out, k, k]);
  gain 0.05 for a bottleneck's last conv (so sixteen residual blocks do not blow up), 1 for
  shortcuts and FPN convs, 2 otherwise.
"""

from __future__ import annotations

import ast
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
KEYS = HERE / "state_dict_keys.txt"
FIXTURE = HERE / "fixture_ref.npz"

_NORM = {"weight": lambda rs, s: rs.uniform(0.8, 1.2, s), "bias": lambda rs, s: rs.normal(0, 0.05, s),
         "running_mean": lambda rs, s: rs.normal(0, 0.05, s), "running_var": lambda rs, s: rs.uniform(0.8, 1.2, s)}


def checkpoint_shapes(path: Path = KEYS) -> dict[str, tuple[int, ...]]:
    """The published checkpoint's keys and shapes, in its order (one ``key<TAB>shape<TAB>dtype`` a line)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def _draw(key: str, shape: tuple[int, ...], rs: np.random.RandomState) -> np.ndarray:
    if ".norm." in key:
        return _NORM[key.rsplit(".", 1)[1]](rs, shape)
    if key.endswith("bias"):
        return rs.normal(0, 0.02, shape)
    if any(part in key for part in ("cls_score", "objectness_logits", "mask_head.predictor")):
        return rs.normal(0, 0.05, shape)
    if "bbox_pred" in key or "anchor_deltas" in key:
        return rs.normal(0, 0.01, shape)
    fan_in = shape[0] if "deconv" in key else int(np.prod(shape[1:]))
    gain = 0.05 if ".conv3." in key else 1.0 if (".shortcut." in key or "fpn_" in key) else 2.0
    return rs.normal(0, 1, shape) * np.sqrt(gain / fan_in)


def random_state_dict(shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """{key: float32 tensor} for every key of ``shapes`` (default: the checkpoint's 408 tensors)."""
    out: dict[str, torch.Tensor] = {}
    for key, shape in (shapes or checkpoint_shapes()).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.int64)
            continue
        rs = np.random.RandomState((zlib.crc32(key.encode()) + seed) % 2**32)
        out[key] = torch.from_numpy(np.asarray(_draw(key, shape, rs), dtype=np.float32).reshape(shape))
    return out
