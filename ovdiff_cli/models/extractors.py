"""Dense feature extractors of docs/method.md §4.1 as :class:`~ovdiff_cli.models.interfaces.FeatureExtractor`.

- ``sd``: queries of chosen cross-attention layers of SD's UNet, one pass at t = 200 on the
  VAE latent with the empty prompt, brought to the latent grid and concatenated;
- ``dino`` / ``mae``: keys of the last ViT block; ``clip``: keys of CLIP's second-to-last block.

Every extractor takes images [B, 3, H, W] in [0, 1] and returns float32 [B, D, h, w];
:meth:`settings` names everything that shaped the features, for the prototype metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovdiff_cli.models.clip import CLIP_MEAN, CLIP_STD, OpenClip
from ovdiff_cli.models.sd import StableDiffusion
from ovdiff_cli.models.vit import ViT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Cross-attention layers (execution order, docs/method.md §1 table) whose queries make the SD features.
SD_LAYERS: dict[str, tuple[int, ...]] = {
    "default": (0, 6, 7, 8, 9, 10, 11, 12, 15),   # first + mid + Up-1 + Up-2 + last: 7680-d for SD-1.5
    "paper-v1": (0, 7, 8, 9, 10, 11, 12, 15),     # without the mid block: 6400-d
}

#: SD-1.5's query width per cross-attention layer, in execution order.
SD15_QUERY_CHANNELS = (320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320)

#: Seed of the generator behind the VAE sample and the noise of support images (docs/method.md §4.1).
SD_NOISE_SEED = 43


def sd_feature_dim(channels: Sequence[int], layers: Sequence[int]) -> int:
    """D of the SD features: the query widths of the chosen layers added up."""
    return sum(channels[i] for i in layers)


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() - m) / s


def round_to_patch(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Resize each side to the nearest multiple of ``patch`` with LANCZOS (a no-op at 512 or 448).

    images [B, 3, H, W] in [0, 1], as 8-bit pictures are resized (docs/method.md §4.1).
    """
    h, w = images.shape[-2:]
    nh, nw = max(patch, round(h / patch) * patch), max(patch, round(w / patch) * patch)
    if (nh, nw) == (h, w):
        return images
    out = []
    for im in images:
        rgb = (im.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        resized = Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS)
        out.append(torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(images.device)


def squash(image: torch.Tensor, size: int) -> torch.Tensor:
    """[3, h, w] → [3, size, size], ignoring the aspect ratio (bilinear, no antialias)."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]


class SDFeatures:
    """Queries of SD's cross-attention layers at one noise level (docs/method.md §4.1, "SD features")."""

    name = "sd"

    def __init__(self, sd: StableDiffusion, layers: str = "default", timestep: int = 200) -> None:
        if layers not in SD_LAYERS:
            raise ValueError(f"unknown SD layer set {layers!r}; choose {', '.join(SD_LAYERS)}")
        self.sd = sd
        self.layer_set = layers
        self.layers = SD_LAYERS[layers]
        self.timestep = timestep
        modules = sd.cross_attention_layers()
        self.modules = [modules[i][1] for i in self.layers]
        self.dim = sum(int(m.to_q.out_features) for m in self.modules)

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        """A test window squashed to the model's size (512²) → features on the 64² latent grid."""
        return squash(window, self.sd.image_size)

    def settings(self) -> dict[str, Any]:
        return {"extractor": "sd", "model": self.sd.name, "layers": self.layer_set, "layer_indices": list(self.layers),
                "timestep": self.timestep, "noise_seed": SD_NOISE_SEED, "prompt": "", "dim": self.dim}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] in [0, 1] → [B, D, S/8, S/8]: each layer's query projection upsampled
        bilinearly to the latent grid, layers concatenated in execution order."""
        from diffusers import DDPMScheduler

        sd = self.sd
        b = images.shape[0]
        dist = sd.vae.encode(images.to(sd.device, sd.dtype) * 2 - 1).latent_dist
        # One generator seeded 43 per image for the VAE sample and a fresh one for ε: both give
        # the same draw, the same for every support image.
        noise = torch.randn(dist.mean.shape[1:], generator=torch.Generator("cpu").manual_seed(SD_NOISE_SEED))
        noise = noise.to(sd.device, dist.mean.dtype).expand_as(dist.mean)
        z0 = (dist.mean + dist.std * noise) * sd.vae_scale
        ddpm = DDPMScheduler.from_config({k: v for k, v in sd.scheduler_config.items() if not k.startswith("_")})
        t = torch.full((b,), self.timestep, device=sd.device, dtype=torch.long)
        zt = ddpm.add_noise(z0, noise, t)
        context = sd.encode_text([""]).expand(b, -1, -1)
        grid = zt.shape[-1]
        captured: dict[int, torch.Tensor] = {}
        hooks = [m.to_q.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out))
                 for k, m in enumerate(self.modules)]
        try:
            sd.unet(zt, t, encoder_hidden_states=context)
        finally:
            for h in hooks:
                h.remove()
        maps = []
        for k in range(len(self.modules)):
            q = captured[k]                                    # [B, g·g, C], row-major cells
            g = int(round(q.shape[1] ** 0.5))
            q = q.float().transpose(1, 2).reshape(b, -1, g, g)
            if g != grid:
                q = F.interpolate(q, size=(grid, grid), mode="bilinear", align_corners=False)
            maps.append(q)
        return torch.cat(maps, dim=1)


class ViTKeys:
    """Keys of one ViT block (DINO: the last; MAE: the last), ImageNet normalisation."""

    def __init__(self, name: str, model: ViT, block: int = -1, dtype: torch.dtype | None = None) -> None:
        self.name = name
        self.model = model
        self.block = block
        self.dim = model.cfg.dim
        self.patch = model.cfg.patch
        self.dtype = dtype or next(model.parameters()).dtype

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        """docs/method.md §4.1: DINO keeps a window whose sides are ≤ 448 as it is; a larger one is resized,
        aspect kept, to short side 448 with the long side ≤ 800, and cut to whole patches (⌊H/8⌋ × ⌊W/8⌋
        cells). MAE squashes every window to 448²."""
        # The network's config says which rule is its own (set where builtin.py builds DINO and MAE).
        if not self.model.cfg.keeps_aspect:
            return squash(window, 448)
        h, w = window.shape[-2:]
        if max(h, w) > 448:
            scale = min(448 / min(h, w), 800 / max(h, w))
            size = (max(self.patch, round(h * scale)), max(self.patch, round(w * scale)))
            window = F.interpolate(window[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            h, w = size
        return window[:, : h // self.patch * self.patch, : w // self.patch * self.patch]

    def settings(self) -> dict[str, Any]:
        return {"extractor": self.name, "model": getattr(self.model, "name", self.name), "block": self.block,
                "norm": "imagenet", "patch": self.patch, "dim": self.dim}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        x = normalise(round_to_patch(images, self.patch).to(p.device), IMAGENET_MEAN, IMAGENET_STD)
        return self.model.keys(x.to(p.dtype), self.block).float()


class ClipKeys:
    """Keys of CLIP's second-to-last vision block; ImageNet statistics by default (docs/method.md §4.1)."""

    name = "clip"

    def __init__(self, clip: OpenClip, norm: str = "imagenet", block: int = -2, readout: str = "keys") -> None:
        if norm not in ("imagenet", "clip"):
            raise ValueError(f"unknown CLIP normalisation {norm!r}; choose imagenet or clip")
        if readout not in ("keys", "token"):
            raise ValueError(f"unknown CLIP read-out {readout!r}; choose keys or token")
        self.clip = clip
        self.norm = norm
        self.block = block
        self.readout = readout
        self.dim = clip.width
        self.patch = clip.patch

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        """A test window squashed to 448² → 28 × 28 cells."""
        return squash(window, 448)

    def settings(self) -> dict[str, Any]:
        return {"extractor": "clip", "model": self.clip.name, "block": self.block, "norm": self.norm,
                "readout": self.readout, "patch": self.patch, "dim": self.dim}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.norm == "imagenet" else (CLIP_MEAN, CLIP_STD)
        x = normalise(round_to_patch(images, self.patch).to(self.clip.device), mean, std)
        return self.clip.keys(x, self.block, output=self.readout == "token").float()


#: The method's extractors; a preset may offer others in slots named ``extractor.<name>``.
BUILTIN_EXTRACTORS = ("sd", "dino", "clip", "mae")


#: Extractors offered by more than one network: name → {variant: slot}, the default variant first
#: (``--mae-variant``; docs/method.md §4.1). Any other extractor ``X`` loads from ``extractor.X``.
VARIANT_SLOTS: dict[str, dict[str, str]] = {"mae": {"b16": "extractor.mae", "l16": "extractor.mae-l16"}}


def slot_of(name: str, variant: str | None = None) -> str:
    """The preset slot extractor ``name`` loads from in ``variant`` (None, or a variant ``name`` does
    not come in: its default)."""
    variants = VARIANT_SLOTS.get(name)
    if not variants:
        return f"extractor.{name}"
    return variants.get(variant or "", next(iter(variants.values())))


def is_variant_slot(slot: str) -> bool:
    """True for the slot of a non-default variant (``extractor.mae-l16``): not an extractor of its own."""
    return any(slot in list(v.values())[1:] for v in VARIANT_SLOTS.values())


def as_extractor(name: str, obj: Any, *, sd_layers: str = "default", sd_timestep: int = 200,
                 clip_norm: str = "imagenet", clip_readout: str = "keys") -> Any:
    """The :class:`FeatureExtractor` for what an ``extractor.*`` slot loaded (networks get adapters)."""
    if isinstance(obj, StableDiffusion):
        return SDFeatures(obj, sd_layers, sd_timestep)
    if isinstance(obj, OpenClip):
        return ClipKeys(obj, clip_norm, readout=clip_readout)
    if isinstance(obj, ViT):
        return ViTKeys(name, obj)
    return obj
