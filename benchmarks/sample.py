"""Time `ovdiff sample`'s generation with and without cross-attention recording.

    python benchmarks/sample.py                      # GPU: SD-1.5 architecture, random fp16 weights
    python benchmarks/sample.py --device cpu --quick # a smoke run of this script on a CPU

For each batch size: N images through the stage's generator (diffusers' pipeline, DPM-Solver++,
30 steps, guidance 8, 512²), once with the 16 cross-attention layers recorded for the prompt's
tokens and once without; seconds per image, the recording's overhead and peak GPU memory.
Weights are random (the hub is unreachable where this runs), which costs the same time as real
ones. Rows are printed as they finish; ``--json`` prints them as one JSON object at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ovdiff_cli.core.settings import SampleSettings
from ovdiff_cli.models.generator import DiffusersGenerator
from ovdiff_cli.models.sd import build_sd15_random, build_tiny_sd

PROMPT = "A good picture of a donut with chocolate glaze"


def run_once(gen: DiffusersGenerator, n: int, batch: int, steps: int, record: bool) -> float:
    """Seconds to draw ``n`` images in batches of ``batch``."""
    positions = list(range(1, len(gen.tokens(PROMPT)) + 1)) if record else None
    noise_gen = torch.Generator("cpu").manual_seed(42)
    settings = SampleSettings()
    sync()
    start = time.perf_counter()
    for first in range(0, n, batch):
        b = min(batch, n - first)
        noise = torch.randn(gen.noise_shape(b), generator=noise_gen, dtype=torch.float16)
        gen.generate([PROMPT] * b, settings.negative_prompt, noise, steps=steps, guidance=settings.guidance,
                     record_positions=positions, scheduler=settings.scheduler)
    sync()
    return time.perf_counter() - start


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-n", "--num-images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="8,16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per row")
    parser.add_argument("--quick", action="store_true", help="the tiny preset, 4 images, 3 steps (script check)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.quick:
        sd = build_tiny_sd(device, dtype)
        args.num_images, args.steps, args.repeats = 4, 3, 1
    else:
        sd = build_sd15_random(device, dtype)
    gen = DiffusersGenerator(sd)
    run_once(gen, 1, 1, 2, True)  # warm-up: kernels, allocator, lazy imports

    rows = []
    print(f"{sd.name} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, {dtype}, "
          f"{gen.image_size}², {args.steps} steps, N = {args.num_images}")
    print(f"{'batch':>5} {'record s/img':>13} {'plain s/img':>12} {'overhead':>9} {'peak GiB':>9}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        times = {}
        peak = 0.0
        for record in (False, True):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[record] = min(run_once(gen, args.num_images, batch, args.steps, record) for _ in range(args.repeats))
            if device.type == "cuda":
                peak = max(peak, torch.cuda.max_memory_allocated(device) / 2**30)
        row = {"batch": batch, "record_s_per_image": times[True] / args.num_images,
               "plain_s_per_image": times[False] / args.num_images,
               "overhead": times[True] / times[False] - 1, "peak_gib": peak}
        rows.append(row)
        print(f"{batch:>5} {row['record_s_per_image']:>13.3f} {row['plain_s_per_image']:>12.3f} "
              f"{row['overhead']:>8.1%} {peak:>9.2f}", flush=True)
    if args.json:
        print(json.dumps({"model": sd.name, "device": str(device), "steps": args.steps, "n": args.num_images,
                          "rows": rows}))


if __name__ == "__main__":
    main()
