"""Time `ovdiff classify`: images per second with the real CLIP ViT-B/16 (random weights).

    python benchmarks/classify.py                 # GPU, fp16
    python benchmarks/classify.py --device cpu -n 4

A 21-class thing vocabulary (VOC's 20 and "lamp"). Random weights make the class probabilities
nearly uniform, so about 10 classes are kept and an image needs up to 1023 subset prompts: the
worst case. "cold" encodes every image's subset prompts afresh (a new text cache per image);
"warm" shares the cache across images, as a run over a dataset does.
"""

from __future__ import annotations

import argparse
import time

import torch

from ovdiff_cli.formats.vocabulary import builtin
from ovdiff_cli.models.clip import OpenClip
from ovdiff_cli.stages.classify import TextCache, decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-n", "--num-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import open_clip

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = open_clip.create_model("ViT-B-16-quickgelu", device=device, precision="fp32").to(dtype=dtype).eval()
    clip = OpenClip("clip-vitb16-random", model, open_clip.get_tokenizer("ViT-B-16"), tiny=True)
    prompts = [c.prompt for c in builtin("voc").classes] + ["lamp"]
    images = torch.rand(args.num_images, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def run(shared: bool) -> tuple[float, float]:
        cache = TextCache(clip)
        kept = 0
        sync()
        start = time.perf_counter()
        for k in range(0, args.num_images, args.batch_size):
            for g in clip.encode_images(images[k : k + args.batch_size].to(device)).float().cpu():
                d = decide(g, prompts, cache if shared else TextCache(clip), 10)
                kept += len(d.kept)
        sync()
        return args.num_images / (time.perf_counter() - start), kept / args.num_images

    run(True)  # warm-up
    print(f"CLIP ViT-B/16 (random weights), {dtype}, on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; 21 classes")
    for label, shared in (("cold", False), ("warm", True)):
        ips, kept = run(shared)
        print(f"{label}: {ips:8.2f} images/s  (mean kept {kept:.1f}, up to {2 ** round(kept) - 1} prompts/image)")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
