"""The small interfaces the stages program against; presets and plugins provide the objects.

A preset (:mod:`ovdiff_cli.models.registry`) maps *slots* to components:

=====================  ===========================================================
slot                   what its component's ``load`` returns
=====================  ===========================================================
``generator``          Stable Diffusion networks (:class:`~.sd.StableDiffusion`) or any
                       :class:`Generator`
``safety_checker``     SD's safety checker and its image processor
``extractor.<name>``   networks a :class:`FeatureExtractor` reads (``sd``, ``dino``, ``clip``,
                       ``mae``, ``mae-l16``), or a :class:`FeatureExtractor` itself
``scorer``             a :class:`ClipScorer` (:class:`~.clip.OpenClip` is one)
``proposer.<name>``    a :class:`MaskProposer`, or what one is built from (CutLER weights)
=====================  ===========================================================

Shapes: images are float tensors [B, 3, H, W] in [0, 1] unless a method says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Generation:
    """What a generator returns for a batch.

    images [B, 3, S, S] float in [0, 1]; attention [B, L, T, G, G] float32 (per layer and
    recorded token: the sum over steps × heads of the conditional branch's clamped maps on a
    G × G grid) and counts [B, L] int64 (maps summed), or None when nothing was recorded.
    """

    images: torch.Tensor
    attention: torch.Tensor | None = None
    counts: torch.Tensor | None = None


@runtime_checkable
class Generator(Protocol):
    """A text-to-image model that can record cross-attention while it draws."""

    name: str
    tiny: bool
    image_size: int

    def tokens(self, text: str) -> list[str]:
        """Token strings of ``text`` as the text encoder sees them, without BOS/EOS, untruncated.

        Position ``i`` of this list is position ``i + 1`` of the encoder's 77-token sequence.
        """
        ...

    def layer_names(self) -> list[str]:
        """Names of the recorded attention layers, in the order of the recording's L axis."""
        ...

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the initial noise for ``batch`` images, e.g. (B, 4, 64, 64) for SD at 512²."""
        ...

    def generate(self, prompts: Sequence[str], negative_prompt: str, noise: torch.Tensor, *, steps: int,
                 guidance: float, record_positions: Sequence[int] | None,
                 scheduler: dict[str, Any] | None = None) -> Generation:
        """Draw one image per prompt from initial noise [B, ...] (:meth:`noise_shape`)."""
        ...


@runtime_checkable
class ImageAttender(Protocol):
    """A text-to-image model that can record its cross-attention on existing images."""

    image_size: int

    def tokens(self, text: str) -> list[str]:
        ...

    def attend(self, images: torch.Tensor, prompt: str, timesteps: Sequence[int], record_positions: Sequence[int],
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] in [0, 1] → attention [B, L, T, S/8, S/8] and counts [B, L]."""
        ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """Dense features of images: one D-vector per cell of an h × w grid."""

    name: str
    dim: int

    def settings(self) -> dict[str, Any]:
        """Every setting that shapes the features (written into prototype metadata, checked on use)."""
        ...

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        """What the extractor sees of a test window [3, h, w] in [0, 1] (docs/method.md §4.1): the
        window resized by the network's own rule, [3, h', w']; return it unchanged to see it as it is."""
        ...

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] → float32 features [B, D, h, w]."""
        ...


@runtime_checkable
class ClipScorer(Protocol):
    """Global image and text embeddings in one space (the category pre-filter)."""

    name: str
    image_size: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] in [0, 1], S = ``image_size`` → unit vectors [B, E]."""
        ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """texts → unit vectors [T, E]."""
        ...


@dataclass(frozen=True)
class Proposals:
    """Class-agnostic proposals of one image: masks [J, H, W] bool and scores [J], detector order."""

    masks: torch.Tensor
    scores: torch.Tensor


@runtime_checkable
class MaskProposer(Protocol):
    """Class-agnostic instance masks (CutLER in the paper)."""

    name: str

    def propose(self, images: torch.Tensor) -> list[Proposals]:
        """images [B, 3, H, W] in [0, 1] → one :class:`Proposals` per image."""
        ...
