"""Time `ovdiff score` over 1,449 VOC-sized label maps (made up here), split into reading and counting.

    python benchmarks/score.py [-n 1449]

Predictions and ground truths are random 500 × 375 palette PNGs with 21 labels (and 5 % ignore
pixels in the ground truths). The stage's own loop runs over them; a second pass times the
PNG reading alone and the counting alone, to show which one bounds the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ovdiff_cli.core.score import Counts, count
from ovdiff_cli.formats.labelmap import read_label_map, write_label_map
from ovdiff_cli.formats.vocabulary import builtin
from ovdiff_cli.stages.score import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--num-images", type=int, default=1449)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        pred, gt = Path(tmp) / "pred", Path(tmp) / "gt"
        for i in range(args.num_images):
            # blocky maps compress like real ones: 25 × 25 pixel regions
            blocks = rng.integers(0, 21, (15, 20)).astype(np.uint8)
            y = np.kron(blocks, np.ones((25, 25), np.uint8))
            t = np.where(rng.random((375, 500)) < 0.05, 255, np.roll(y, 7, axis=1)).astype(np.uint8)
            write_label_map(pred / f"{i:05d}.png", y)
            write_label_map(gt / f"{i:05d}.png", t)
        start = time.perf_counter()
        report = score(pred, gt, vocab=builtin("voc"))
        total = time.perf_counter() - start
        pairs = sorted(zip(sorted(pred.glob("*.png")), sorted(gt.glob("*.png"))))
        start = time.perf_counter()
        loaded = [(read_label_map(p), read_label_map(g)) for p, g in pairs]
        reading = time.perf_counter() - start
        start = time.perf_counter()
        c = Counts.zeros(21)
        for y, t in loaded:
            c = c + count(y, t, 21)
        counting = time.perf_counter() - start
    assert (c.intersection == report.counts.intersection).all()
    print(f"{args.num_images} label maps 500×375: score {total:.2f} s; reading the PNGs alone {reading:.2f} s, "
          f"counting alone {counting:.2f} s")


if __name__ == "__main__":
    main()
