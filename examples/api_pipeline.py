"""The stages as a Python API: the same work as the commands, from a script.

    python examples/api_pipeline.py [WORK_FOLDER]                       # the paper's models (GPU)
    PRESET=tiny N=2 STEPS=2 python examples/api_pipeline.py [WORK_FOLDER]  # toy models on a CPU

PRESET, N and STEPS are the defaults of --preset, -n and --steps, as in the shell examples. Every
stage function takes and returns paths, like its command, so a script can mix them with its own
code: here, the support masks are inspected between the stages.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ovdiff_cli.core.settings import DEFAULT_EXTRACTORS, SampleSettings
from ovdiff_cli.formats import vocabulary
from ovdiff_cli.formats.labelmap import read_label_map
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.stages.attribute import attribute
from ovdiff_cli.stages.filter_stuff import filter_stuff
from ovdiff_cli.stages.mask import mask
from ovdiff_cli.stages.prototype import prototype
from ovdiff_cli.stages.sample import sample
from ovdiff_cli.stages.segment import segment

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", default="api-work", type=Path)
    parser.add_argument("--preset", default=os.environ.get("PRESET", "paper"),
                        help="`tiny`: toy models with random weights, on the CPU (default: $PRESET or paper)")
    parser.add_argument("-n", type=int, default=int(os.environ.get("N", SampleSettings().num_images)),
                        help="support images per class (default: $N or the method's 32)")
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", SampleSettings().steps)),
                        help="denoising steps (default: $STEPS or the method's 30)")
    args = parser.parse_args()
    tiny = args.preset == "tiny"
    vocab = vocabulary.parse("cat,donut with chocolate glaze")
    settings = SampleSettings(num_images=args.n, steps=args.steps)

    folders = sample(vocab.classes, out=args.work / "support", preset=args.preset, settings=settings,
                     device="cpu" if tiny else "cuda", dtype=_dtype(tiny))
    attribute(folders)
    mask(folders, proposer="threshold" if tiny else "auto", preset=args.preset)
    for f in folders:  # the fraction of each support image marked foreground
        s = SupportSet(f)
        shares = [float((s.read_mask(i)[0] == 1).mean()) for i in s.image_indices()]
        print(f"{f.name}: foreground {np.mean(shares):.0%} of the support images")
    files = prototype(folders, extractors=DEFAULT_EXTRACTORS, out=args.work / "prototypes", preset=args.preset,
                      device="cpu" if tiny else "cuda", dtype=_dtype(tiny))
    filter_stuff(files, vocab, out=args.work / "banks")
    (label_map,) = segment([HERE / "data" / "table.png"], [args.work / "banks"], out=args.work / "segmentation",
                           preset=args.preset, device="cpu" if tiny else "cuda", dtype=_dtype(tiny), prefilter=False)
    labels = read_label_map(label_map)
    names = ["background", *vocab.names]
    print("pixels per label:", {names[v]: int(n) for v, n in zip(*np.unique(labels, return_counts=True))})


def _dtype(tiny: bool):
    import torch

    return torch.float32 if tiny else torch.float16


if __name__ == "__main__":
    main()
