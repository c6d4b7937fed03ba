"""Time `ovdiff prototype` per class and extractor with the real architectures (random weights).

    python benchmarks/prototype.py                           # GPU: N = 32, sd, dino, clip, mae
    python benchmarks/prototype.py --device cpu -n 4 -x dino # a CPU spot check
    python benchmarks/prototype.py --quick                   # tiny preset, script check

A synthetic support set (random 512² images; fg a centred disc of ~28 % of the image, bg a
border band of ~30 %) is written to a temporary folder, then each extractor's stage worker runs on
it as `ovdiff prototype` would: features in batches, pooling on the device, k-means (K = 32) per
side (`--kmeans auto`: torch on a GPU, scikit-learn on the CPU, as the stage chooses). Prints
seconds per class split into features and the rest (pooling, k-means, writing), and peak GPU
memory. Weights are random: the hub is unreachable where this runs, and the
architectures cost the same.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovdiff_cli.core.settings import PrototypeSettings
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.models import registry
from ovdiff_cli.models.builtin import paper_architecture
from ovdiff_cli.models.extractors import as_extractor
from ovdiff_cli.stages.prototype import ClassPrototyper, SetInputs


def synthetic_set(folder: Path, n: int, size: int) -> SupportSet:
    s = SupportSet(folder)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    mask = np.zeros((size, size), np.uint8)
    mask[r < 0.3 * size] = 1
    border = np.minimum.reduce([yy, xx, size - 1 - yy, size - 1 - xx])
    mask[border < 0.08 * size] = 2
    for i in range(n):
        s.write_image(i, rng.integers(0, 256, (size, size, 3), dtype=np.uint8), {"class": "bench"})
        s.write_mask(i, mask, {"mode": "synthetic"})
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-n", "--num-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("-x", "--extractor", action="append", choices=["sd", "dino", "clip", "mae"])
    parser.add_argument("--kmeans", choices=["auto", "torch", "sklearn"], default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny preset at 128² (script check)")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.extractor or ["sd", "dino", "clip", "mae"]
    size = 128 if args.quick else 512
    with tempfile.TemporaryDirectory() as tmp:
        s = synthetic_set(Path(tmp) / "bench", args.num_images, size)
        settings = PrototypeSettings(kmeans=args.kmeans).resolved(device.type)
        print(f"N = {args.num_images}, {size}², batch {args.batch_size}, k-means {settings.kmeans}, on "
              f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
        print(f"{'extractor':<9} {'dim':>5} {'features s':>11} {'rest s':>8} {'total s':>8} {'peak GiB':>9}")
        for name in names:
            dtype = torch.float16 if (name == "sd" and device.type == "cuda") else torch.float32
            net = (registry.load("tiny", f"extractor.{name}", device, dtype) if args.quick
                   else paper_architecture(name, device, dtype))
            ex = as_extractor(name, net)
            timed = Timed(ex)
            worker = ClassPrototyper(timed, {"preset": "benchmark", "tiny": True, "components": {}},
                                     settings, args.batch_size, overwrite=True)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            worker.run(s, SetInputs.read(s), Path(tmp) / "out")
            total = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
            print(f"{name:<9} {ex.dim:>5} {timed.seconds:>11.2f} {total - timed.seconds:>8.2f} {total:>8.2f} "
                  f"{peak:>9.2f}", flush=True)
            del net, ex, timed, worker
            if device.type == "cuda":
                torch.cuda.empty_cache()


class Timed:
    """An extractor that adds up the seconds spent in ``features`` (synchronised on a GPU)."""

    def __init__(self, ex) -> None:
        self.ex, self.name, self.dim, self.seconds = ex, ex.name, ex.dim, 0.0

    def settings(self):
        return self.ex.settings()

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        return self.ex.window_input(window)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.ex.features(images)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


if __name__ == "__main__":
    main()
