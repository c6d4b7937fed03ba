"""Time CutLER's detector (ovdiff's torch/torchvision Cascade Mask R-CNN) on support images.

    python benchmarks/cutler.py --device cpu                 # batch 1 and 8 on the CPU
    python benchmarks/cutler.py                              # GPU: fp32 and fp16, batch 8 and 32
    python benchmarks/cutler.py --device cpu --quick         # one 128² image at 160² (script check)

Support images are random 512² pictures with a few bright rectangles, resized to 800² as the mask
stage does; each batch goes through `CutlerProposer.propose`, the mask stage's call (network,
score filter, masks pasted at 512²). Weights are the deterministic random weights of
tests/models/cutler_reference (the real file cannot be downloaded where this runs; the
architecture costs the same, and those weights keep activations of order one). They score
nearly every box high, so each image keeps the cap of 100 detections, more than real weights
keep at 0.35: mask pasting weighs a little more here than in use. Prints seconds per image
after one warm-up batch, detections per image and peak GPU memory. With fp16 on a GPU it also
prints how far half precision moves the detections: for each fp32 detection among an image's
20 best, the fp16 detection that overlaps it most (IoU > 0.5), the largest score and
box-coordinate differences between them, and how many found no partner.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.models.cutler_reference

from torchvision.ops import box_iou  # noqa: E402

from ovdiff_cli.models.cutler import CutlerProposer, resize_for_detector  # noqa: E402
from ovdiff_cli.models.rcnn.detector import CascadeMaskRCNN  # noqa: E402
from tests.models.cutler_reference.weights import random_state_dict  # noqa: E402


def support_images(n: int, size: int) -> torch.Tensor:
    """[n, 3, size, size] in [0, 1]: noise with three bright rectangles each."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=g) * 0.3
    for im in images:
        for _ in range(3):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            im[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.5
    return images


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_batches(model: CascadeMaskRCNN, images: torch.Tensor, batch: int, device: torch.device,
                 repeats: int, short_side: int) -> tuple[float, float]:
    """Seconds per image and detections per image, after one warm-up batch."""
    proposer = CutlerProposer(model, min_size=short_side)
    proposer.propose(images[:batch])
    sync(device)
    found, start = 0, time.perf_counter()
    for _ in range(repeats):
        for k in range(0, len(images), batch):
            found += sum(len(p.scores) for p in proposer.propose(images[k : k + batch]))
    sync(device)
    n = repeats * len(images)
    return (time.perf_counter() - start) / n, found / n


def half_deviation(model: CascadeMaskRCNN, images: torch.Tensor) -> tuple[float, float, int, int]:
    """(largest score difference, largest box difference in pixels at 800², unmatched, compared)
    of fp16 against fp32 over each image's 20 best fp32 detections."""
    inputs = [resize_for_detector(im, 800, 1333) for im in images]
    full = model.float()(inputs)
    half = model.half()(inputs)
    model.float()
    worst_score = worst_box = 0.0
    unmatched = compared = 0
    for f, h in zip(full, half):
        fb, fs = f["boxes"][:20], f["scores"][:20]
        compared += len(fb)
        if len(h["boxes"]) == 0:
            unmatched += len(fb)
            continue
        iou = box_iou(fb, h["boxes"])
        best, j = iou.max(dim=1)
        ok = best > 0.5
        unmatched += int((~ok).sum())
        if ok.any():
            worst_score = max(worst_score, float((fs[ok] - h["scores"][j[ok]]).abs().max()))
            worst_box = max(worst_box, float((fb[ok] - h["boxes"][j[ok]]).abs().max()))
    return worst_score, worst_box, unmatched, compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 1 8 on the CPU, 8 32 on a GPU")
    parser.add_argument("-n", "--num-images", type=int, help="default: the largest batch size")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one 128² image at 160², batch 1 (script check)")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = [1] if args.quick else args.batch_sizes or ([8, 32] if device.type == "cuda" else [1, 8])
    images = support_images(args.num_images or max(batches), 128 if args.quick else 512)
    model = CascadeMaskRCNN()
    model.load_state_dict(random_state_dict())
    model = model.to(device).eval().requires_grad_(False)
    dtypes = [torch.float32, torch.float16] if device.type == "cuda" else [torch.float32]
    print(f"device {device}, {len(images)} images of {images.shape[-1]}², torch threads {torch.get_num_threads()}")
    for dtype in dtypes:
        model.to(dtype)
        for batch in batches:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            per_image, found = time_batches(model, images, batch, device, args.repeats, 160 if args.quick else 800)
            peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
            print(f"{str(dtype).removeprefix('torch.')} batch {batch}: {per_image:.3f} s/image, "
                  f"{found:.1f} detections/image{peak}")
    if torch.float16 in dtypes:
        score, box, unmatched, compared = half_deviation(model.float(), images[: min(8, len(images))])
        print(f"fp16 vs fp32: largest score difference {score:.4f}, largest box difference {box:.2f} px "
              f"(800² input), {unmatched} of {compared} top-20 detections without an IoU > 0.5 partner")


if __name__ == "__main__":
    main()
