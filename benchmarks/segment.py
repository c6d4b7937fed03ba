"""Time `ovdiff segment` per 500 × 375 image with the real SD + DINO + CLIP architectures
(random weights) and a 21-class vocabulary, with and without the sliding windows.

    python benchmarks/segment.py                       # GPU: SD fp16, ViTs fp32
    python benchmarks/segment.py --quick               # tiny preset on the CPU (script check)
    python benchmarks/segment.py --device cpu -x clip  # one real extractor on the CPU

Banks are random unit vectors of each extractor's width, 65 foreground and 65 background rows
per class (the paper's 1 + 32 + 32), all classes active. Prints seconds per image (after one
warm-up image) and peak GPU memory, for the 9 windows of a 448 × 597 image and for the whole
image alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ovdiff_cli.core.settings import SegmentSettings
from ovdiff_cli.core.bank import Rows
from ovdiff_cli.formats.prototypes import Bank
from ovdiff_cli.formats.vocabulary import builtin, build
from ovdiff_cli.models import registry
from ovdiff_cli.models.builtin import paper_architecture
from ovdiff_cli.models.extractors import as_extractor
from ovdiff_cli.stages.segment import Segmenter



def random_bank(extractor: str, dim: int, vocab, rows: int = 65) -> Bank:
    g = torch.Generator().manual_seed(0)
    n = len(vocab) * rows

    def side() -> Rows:
        v = torch.randn(n, dim, generator=g)
        owner = torch.arange(1, len(vocab) + 1).repeat_interleave(rows)
        return Rows(v / v.norm(dim=1, keepdim=True), owner, torch.zeros(n, dtype=torch.long),
                    torch.zeros(n, dtype=torch.long))

    return Bank(side(), side(), vocab, {"extractor": extractor, "settings": {"bg_mode": "all"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-x", "--extractor", action="append", choices=["sd", "dino", "clip"])
    parser.add_argument("-n", "--num-images", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=9)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.extractor or ["sd", "dino", "clip"]
    vocab = build("voc21", [(c.name, c.prompt, c.kind) for c in builtin("voc").classes] + [("lamp", None, None)])
    extractors, banks = {}, {}
    for name in names:
        dtype = torch.float16 if (name == "sd" and device.type == "cuda") else torch.float32
        if args.quick:
            net = registry.load("tiny", f"extractor.{name}", device, dtype)
        else:
            net = paper_architecture(name, device, dtype)
        extractors[name] = as_extractor(name, net)
        banks[name] = ("random", random_bank(name, extractors[name].dim, vocab))
    rgb = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    active = torch.ones(len(vocab) + 1, dtype=torch.bool)
    print(f"{'+'.join(names)} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{len(vocab)} classes, 500×375 → 448×597")
    for label, sliding in (("9 windows", True), ("whole image", False)):
        seg = Segmenter(banks, extractors, SegmentSettings(sliding_window=sliding), device, args.batch_size)
        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for k in range(args.num_images + 1):
            start = time.perf_counter()
            job = seg.start(None, rgb, active)
            seg.run([job])
            seg.finish(job, save_scores=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k:
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        print(f"{label:>12}: {np.mean(times):7.2f} s/image   peak {peak:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
