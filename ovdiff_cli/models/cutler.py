"""CutLER's class-agnostic detector as the mask stage's proposer (docs/method.md §3.1).

The network is the ImageNet-trained Cascade Mask R-CNN (ResNet-50 FPN) of CutLER, implemented
on torch and torchvision in :mod:`ovdiff_cli.models.rcnn`; its published checkpoint
``cutler_cascade_final.pth`` loads as it is. CutLER's code and weights are licensed
CC BY-NC-SA 4.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ovdiff_cli.models.interfaces import Proposals
from ovdiff_cli.models.rcnn.detector import load_detector
from ovdiff_cli.models.rcnn.postprocess import Detections, shortest_edge_size
from ovdiff_cli.models.rcnn.roi_heads import DetectionSettings

CUTLER_URL = "http://dl.fbaipublicfiles.com/cutler/checkpoints/cutler_cascade_final.pth"
CUTLER_FILE = "cutler_cascade_final.pth"
LICENCE = "CC BY-NC-SA 4.0"


class Detector(Protocol):
    """What :class:`CutlerProposer` calls: :meth:`~ovdiff_cli.models.rcnn.detector.CascadeMaskRCNN.detect`."""

    def detect(self, images: list[torch.Tensor], sizes: list[tuple[int, int]],
               settings: DetectionSettings = ...) -> list[Detections]: ...


def load_cutler(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Detector:
    """The detector with the checkpoint's weights, on ``device`` in ``dtype`` (a component loader)."""
    return load_detector(files[CUTLER_FILE], device, dtype)


def resize_for_detector(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """[3, H, W] in [0, 1] → [3, h, w] in [0, 255], short side ``min_size``, long side ≤ ``max_size``.

    detectron2's test-time sizes (:func:`~ovdiff_cli.models.rcnn.postprocess.shortest_edge_size`),
    resized bilinearly in float (align_corners=False, no antialias: support images are upsampled,
    512 → 800), as the release resizes its support images (docs/method.md §3.1).
    """
    new_h, new_w = shortest_edge_size(int(image.shape[-2]), int(image.shape[-1]), min_size, max_size)
    x = image.float()[None] * 255
    if (new_h, new_w) != tuple(image.shape[-2:]):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return x[0]


class CutlerProposer:
    """CutLER's detector as a :class:`~ovdiff_cli.models.interfaces.MaskProposer` (docs/method.md §3.1).

    Support images go through the detector as one batch (on its device): scaled to 0–255 and
    resized to 800 on the short side; detections above ``score_threshold`` (before NMS), at most
    ``max_detections``, come back with their masks pasted at the image's size, threshold 0.5.
    """

    name = "cutler"

    def __init__(self, detector: Detector, *, score_threshold: float = 0.35, max_detections: int = 100,
                 min_size: int = 800, max_size: int = 1333) -> None:
        self.detector = detector
        self.settings = DetectionSettings(score_threshold=score_threshold, max_detections=max_detections)
        self.min_size = min_size
        self.max_size = max_size

    @torch.no_grad()
    def propose(self, images: torch.Tensor) -> list[Proposals]:
        """images [B, 3, H, W] in [0, 1] → one Proposals per image (masks [J, H, W] bool, detector order)."""
        inputs = [resize_for_detector(im, self.min_size, self.max_size) for im in images]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        found = self.detector.detect(inputs, sizes, self.settings)
        return [Proposals(d.masks.cpu(), d.scores.float().cpu()) for d in found]
