"""Time ovdiff's file formats at the sizes the paper's settings produce (CPU, local disk).

    python benchmarks/formats.py [--folder DIR]

Sizes: recorded cross-attention of one class (N = 32 images, 16 layers, 9 prompt tokens, 64²),
attribution maps (32 × 512² and 32 × 64²), an SD prototype file (7680-d, 65 + 65 prototypes and
~40k pooled-pixel provenance rows), and a 21-class SD bank (21 × 130 rows).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ovdiff_cli.core.attention import Attribution, CrossAttention
from ovdiff_cli.core.bank import Rows
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.formats.prototypes import Bank, read_bank, read_prototypes, write_bank, write_prototypes
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.formats.vocabulary import builtin


def timed(label: str, fn, path: Path | None = None, repeat: int = 3) -> None:
    best = min(_once(fn) for _ in range(repeat))
    size = f"{path.stat().st_size / 2**20:8.1f} MiB" if path is not None and path.exists() else " " * 12
    print(f"{label:<34} {best * 1000:8.1f} ms {size}")


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="ovdiff-bench-"))
    g = torch.Generator().manual_seed(0)
    prov = {"models": {"preset": "benchmark", "tiny": True, "components": {}}, "inputs": {}}

    s = SupportSet(folder / "cat")
    rec = CrossAttention(torch.rand(32, 16, 9, 64, 64, generator=g), torch.full((32, 16), 240),
                         torch.arange(1, 10), torch.tensor([6]), tuple("abcdefghi"), tuple(f"l{i}" for i in range(16)),
                         {**prov, "class": "cat", "prompt": "A good picture of a cat"})
    timed("write crossattn (32x16x9x64x64)", lambda: s.write_crossattn(rec), s.crossattn_path)
    timed("read crossattn", s.read_crossattn, s.crossattn_path)
    att = Attribution(torch.rand(32, 512, 512, generator=g), torch.rand(32, 64, 64, generator=g), {**prov, "class": "cat"})
    timed("write attribution (32x512x512)", lambda: s.write_attribution(att), s.attribution_path)
    timed("read attribution", s.read_attribution, s.attribution_path)

    def side() -> Side:
        p = 40_000
        return Side(torch.randn(1, 7680, generator=g), torch.randn(32, 7680, generator=g),
                    torch.arange(32), torch.randn(32, 7680, generator=g),
                    torch.randint(0, 64, (p, 3), generator=g), torch.randint(0, 32, (p,), generator=g))

    protos = Prototypes(side(), side(), {**prov, "class": "cat", "extractor": "sd"})
    ppath = folder / "cat.sd.safetensors"
    timed("write SD prototypes (7680-d)", lambda: write_prototypes(ppath, protos), ppath)
    timed("read SD prototypes", lambda: read_prototypes(ppath), ppath)

    vocab = builtin("voc")
    rows = 20 * 65  # VOC: 20 classes × (1 + 32 + 32) prototypes
    vec = torch.nn.functional.normalize(torch.randn(rows, 7680, generator=g), dim=1)
    owner = torch.arange(rows) % 20 + 1
    bside = Rows(vec, owner, torch.zeros(rows, dtype=torch.int64), torch.zeros(rows, dtype=torch.int64))
    bank = Bank(bside, bside, vocab, {**prov, "extractor": "sd"})
    bpath = folder / "bank.sd.safetensors"
    timed("write SD bank (VOC, 2x1300 rows)", lambda: write_bank(bpath, bank), bpath)
    timed("read SD bank", lambda: read_bank(bpath), bpath)


if __name__ == "__main__":
    main()
