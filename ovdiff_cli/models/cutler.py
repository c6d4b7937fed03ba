"""CutLER's class-agnostic detector: its checkpoint and the optional detectron2 dependency.

The checkpoint is the ImageNet-trained Cascade Mask R-CNN (ResNet-50 FPN) of CutLER. detectron2
is not on the package index; it is imported only when this model is loaded, and its absence is
reported with the install command.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch


CUTLER_URL = "http://dl.fbaipublicfiles.com/cutler/checkpoints/cutler_cascade_final.pth"
CUTLER_FILE = "cutler_cascade_final.pth"

DETECTRON2_INSTALL = ("pip install 'ovdiff-cli[cutler]' && pip install --no-build-isolation "
                      "'git+https://github.com/facebookresearch/detectron2.git'")


def detectron2_available() -> bool:
    """Whether detectron2 can be imported (checked without importing it)."""
    return importlib.util.find_spec("detectron2") is not None


@dataclass(frozen=True)
class CutlerWeights:
    """The located CutLER checkpoint."""

    checkpoint: Path
    device: torch.device


def load_cutler(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> CutlerWeights:
    """The checkpoint's location; the registry has checked that detectron2 imports. The mask stage
    builds the detector from it."""
    return CutlerWeights(files[CUTLER_FILE], device)
