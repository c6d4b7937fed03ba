"""Frozen settings of the stages, with the method's defaults (docs/method.md §0.1, §1, §2).

Each is written into the metadata of the files it shapes, so a rerun can tell whether an
existing output was made the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

#: The official release's negative prompt (docs/method.md §1).
NEGATIVE_PROMPT = "text, low quality, blurry, cartoon, meme, low resolution, bad, poor, faded"

#: The official release's template; paper v1 used "A good photo of a {}".
TEMPLATE = "A good picture of a {}"

#: The extractors a prototype or run uses when none is named (the paper's SD + DINO + CLIP).
DEFAULT_EXTRACTORS: tuple[str, ...] = ("sd", "dino", "clip")

#: PAMR's dilations (docs/method.md §7.5).
PAMR_DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 12, 24)


@dataclass(frozen=True)
class SampleSettings:
    """How support images are drawn (docs/method.md §1)."""

    num_images: int = 32
    batch_size: int = 8
    steps: int = 30
    guidance: float = 8.0
    template: str = TEMPLATE
    negative_prompt: str = NEGATIVE_PROMPT
    seed: int = 42
    reseed_per_class: bool = True
    size: int = 512
    scheduler: dict[str, Any] = field(default_factory=lambda: {
        "name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "solver_order": 2,
        "timestep_spacing": "linspace", "final_sigmas_type": "sigma_min", "lower_order_final": True,
        "prediction_type": "epsilon"})

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)


#: Timesteps at which `attribute --renoise` re-noises an image (see core.attribution).
RENOISE_TIMESTEPS = (100, 250, 400, 550, 700)


@dataclass(frozen=True)
class AttributeSettings:
    """How attribution maps are made from recorded attention (docs/method.md §2)."""

    layers: tuple[int, ...] = tuple(range(16))
    size: int = 512
    eps: float = 1e-6

    def to_meta(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "size": self.size, "eps": self.eps}


@dataclass(frozen=True)
class MaskSettings:
    """How support masks are chosen (docs/method.md §3)."""

    proposer: str = "cutler"          # "cutler" (or another registered proposer) or "threshold"
    score_threshold: float = 0.35     # CutLER detections kept above this score
    max_detections: int = 100
    min_size: int = 800               # detector input: short side, long side capped at max_size
    max_size: int = 1333
    fallback_fg: float = 0.5          # no usable proposal: fg = A > 0.5, bg = A < 0.2
    fallback_bg: float = 0.2
    bg_attn_max: float = 0.2          # proposal bg refined to A < 0.2, then one cross erosion
    otsu_bins: int = 256
    otsu_fallback: tuple[float, float] = (0.2, 0.5)  # (t_lo, t_hi) when multi-Otsu cannot split

    def to_meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["otsu_fallback"] = list(self.otsu_fallback)
        return d


@dataclass(frozen=True)
class PrototypeSettings:
    """How prototypes are pooled from features (docs/method.md §4.2)."""

    clusters: int = 32            # K parts per side (k-means)
    kmeans_max_iter: int = 300
    kmeans_tol: float = 1e-4      # scikit-learn semantics: relative to the mean feature variance
    kmeans_seed: int = 0
    seed: int = 43                # python/numpy/torch, at start and per class
    kmeans: str = "auto"          # "torch" or "sklearn"; auto: torch on a GPU, scikit-learn on the CPU

    def resolved(self, device_type: str) -> PrototypeSettings:
        """These settings with ``kmeans`` decided for a device type (``cpu``, ``cuda``…): ``auto``
        is the torch k-means on an accelerator and scikit-learn's on the CPU, so CPU results stay
        what they were before the torch k-means existed (docs/method.md §4.2)."""
        if self.kmeans != "auto":
            return self
        return replace(self, kmeans="sklearn" if device_type == "cpu" else "torch")

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)


#: k-means implementations of `prototype --kmeans` (docs/method.md §4.2).
KMEANS_CHOICES: tuple[str, ...] = ("auto", "torch", "sklearn")

#: What prototype files written before a setting was recorded were made with: compared as if recorded.
PROTOTYPE_SETTINGS_BEFORE: Mapping[str, Any] = MappingProxyType({"kmeans": "sklearn"})


@dataclass(frozen=True)
class BankSettings:
    """How a vocabulary's prototypes become a bank (docs/method.md §5, §0.1)."""

    threshold: float = 0.85                          # a thing's bg prototype above this cosine with stuff fg goes
    stuff_filter: bool = True                        # False: --no-stuff-filter (steps 2-3 skipped)
    compare: str = "stuff"                           # "stuff" (default) or "all" (the official variant)
    proto_types: tuple[str, ...] = ("class", "instance", "part")
    bg_mode: str = "all"                             # "all", "mean" (class prototype only) or "zero" (none)

    def to_meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["proto_types"] = list(self.proto_types)
        return d


@dataclass(frozen=True)
class SegmentSettings:
    """How a test image is segmented (docs/method.md §7)."""

    short_side: int = 448
    crops: tuple[tuple[int, int], ...] = ((448, 224), (336, 224))  # (crop, stride)
    whole_image: bool = True
    sliding_window: bool = True      # False: the whole image only (--no-sliding-window)
    score_floor: float = 0.0         # scores ≤ this become 0 before the argmax
    background: bool = True          # False: the no-background protocol (no bg channel, no floor)
    bg_threshold: float = 0.75       # bank made with --bg-mode zero: class scores ≤ this become 0
    pamr: bool = False
    pamr_iterations: int = 10
    pamr_dilations: tuple[int, ...] = PAMR_DILATIONS
    keep_inactive_bg: bool = False

    def to_meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["crops"] = [list(c) for c in self.crops]
        d["pamr_dilations"] = list(self.pamr_dilations)
        return d
