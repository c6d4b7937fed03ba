"""Helpers shared by the stages: support-set images, seeding, output folders."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.supportset import SupportSet


def load_images(s: SupportSet, indices: Sequence[int], size: int) -> torch.Tensor:
    """Images ``indices`` of a support set as float [n, 3, size, size] in [0, 1].

    An image of another size (a user's own photo) is squashed to size × size (bilinear,
    antialiased), the grid its attribution maps live on.
    """
    out = []
    for i in indices:
        rgb, _ = s.read_image(i)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x)
    return torch.cat(out) if out else torch.zeros(0, 3, size, size)


def check_writable(out: Path) -> None:
    """Fail before any model is loaded when ``out`` cannot be created or written (creates nothing)."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BadFile(probe, "is not a folder, so nothing can be written under it",
                      fix="choose another -o")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadFile(probe, "is not writable", fix="choose a writable folder with -o")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a CPU generator for the noise."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator("cpu").manual_seed(seed)
