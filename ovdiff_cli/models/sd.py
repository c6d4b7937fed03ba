"""Stable Diffusion's networks: UNet, VAE, CLIP text encoder, tokenizer and scheduler settings.

``paper`` loads Stable Diffusion 1.5 (fp16 weights) from the local Hugging Face cache;
``tiny`` builds the same families at toy size with random weights: the UNet keeps SD-1.5's block
layout (16 cross-attention layers with 8 heads each, in the same blocks), so code that indexes
layers runs unchanged on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdiff_cli.core.tokens import CONTEXT_LENGTH, VOCAB_SIZE

#: The VAE halves an image's side three times: latents of an S × S image are S/8 × S/8.
LATENT_FACTOR = 8

#: SD-1.5's VAE latent scaling (``scaling_factor`` of its config): latents are scaled by it
#: before the UNet sees them.
VAE_SCALE = 0.18215

#: SD-1.5's noise schedule (docs/method.md §1), the base a sampler is built from. The tiny preset uses
#: it as is; ``paper`` reads the same values from the repository's scheduler_config.json. The
#: sampler's own settings (DPM-Solver++, order 2, 30 steps, spacing) belong to the sample stage.
SD15_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: Files of the SD-1.5 repository that ovdiff uses (fp16 variant, as the official release).
SD15_FILES: tuple[str, ...] = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)

SD15_SAFETY_FILES: tuple[str, ...] = (
    "safety_checker/config.json",
    "safety_checker/model.fp16.safetensors",
    "feature_extractor/preprocessor_config.json",
)


@dataclass
class StableDiffusion:
    """The networks of a Stable Diffusion model, on one device and dtype.

    ``unet`` maps latents [B, 4, h, w], a timestep and text states [B, 77, E] to noise
    [B, 4, h, w]; ``vae`` maps images [B, 3, H, W] in [-1, 1] to latents with H = 8h;
    ``text_encoder`` maps token ids [B, 77] to states [B, 77, E].
    """

    name: str
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    tiny: bool
    vae_scale: float = VAE_SCALE
    image_size: int = 512  # the side it draws at: 512 for SD-1.5

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def cross_attention_layers(self) -> list[tuple[str, nn.Module]]:
        """The UNet's cross-attention modules in execution order: down blocks, mid, up blocks.

        For SD-1.5: 16 layers, indices as the table of docs/method.md §1 (6 = mid block).
        """
        named = [(n, m) for n, m in self.unet.named_modules() if n.endswith("attn2")]

        def order(item: tuple[str, nn.Module]) -> tuple[int, int, int]:
            parts = item[0].split(".")
            section = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[parts[0]]
            block = int(parts[1]) if section != 1 else 0
            attn = int(parts[parts.index("attentions") + 1])
            return section, block, attn

        return sorted(named, key=order)

    def token_ids(self, texts: list[str]) -> torch.Tensor:
        """Token ids [B, 77] (BOS, tokens, EOS, then EOS padding; truncated at 77)."""
        enc = self.tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                             return_tensors="pt")
        return enc.input_ids

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text encoder states [B, 77, E] (last hidden state, as SD conditions on)."""
        ids = self.token_ids(texts).to(self.device)
        return self.text_encoder(ids)[0]


def load_sd15(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> StableDiffusion:
    """Load SD-1.5 from cached files (no network): the folder holding ``model_index.json``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = files["model_index.json"].parent
    kwargs = {"torch_dtype": dtype, "variant": "fp16", "local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kwargs)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", **kwargs)
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    sd = StableDiffusion(SD15_REPO, unet, vae, text_encoder, tokenizer, scheduler_config, tiny=False,
                         vae_scale=float(vae.config.scaling_factor))
    return _finish(sd, device)


def build_tiny_sd(device: torch.device, dtype: torch.dtype, seed: int = 0) -> StableDiffusion:
    """SD-1.5's layout at toy width, random weights from ``seed``.

    It draws 128² images (16² latents) by default: the networks run at any size, and at 512²
    the first level's self-attention over 4,096 tokens alone would cost seconds per step on a CPU.
    """
    return _build_random("tiny-sd", device, dtype, seed, widths=(16, 32, 32, 32), vae_widths=(8, 16, 16, 16),
                         groups=8, text=(32, 64, 2, 4), image_size=128, vae_layers=1)


def build_sd15_random(device: torch.device, dtype: torch.dtype, seed: int = 0) -> StableDiffusion:
    """SD-1.5's exact architecture (860M UNet, VAE, ViT-L/14 text encoder) with random weights.

    For timing the real networks where the weights cannot be downloaded (benchmarks); it says
    ``tiny`` in its outputs because its pictures are noise. Built on ``device`` directly.
    """
    return _build_random("sd15-architecture-random-weights", device, dtype, seed, widths=(320, 640, 1280, 1280),
                         vae_widths=(128, 256, 512, 512), groups=32, text=(768, 3072, 12, 12), image_size=512,
                         vae_layers=2, cross_dim=768)


def _build_random(name: str, device: torch.device, dtype: torch.dtype, seed: int, *, widths: tuple[int, ...],
                  vae_widths: tuple[int, ...], groups: int, text: tuple[int, int, int, int], image_size: int,
                  vae_layers: int, cross_dim: int | None = None) -> StableDiffusion:
    """SD-1.5's block layout at the given widths; ``text`` = (hidden, MLP, layers, heads)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ovdiff_cli.models.tokenizer import clip_tokenizer

    hidden, mlp, layers, heads = text
    build_on = device if device.type != "cpu" else torch.device("cpu")
    with torch.random.fork_rng(devices=[]), build_on:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=image_size // LATENT_FACTOR, in_channels=4, out_channels=4, layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=widths, cross_attention_dim=cross_dim or hidden,
            attention_head_dim=8,  # diffusers' legacy name: SD-1.5 configs mean 8 heads by it
            norm_num_groups=groups,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=vae_layers, sample_size=image_size,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=vae_widths, norm_num_groups=groups, scaling_factor=VAE_SCALE,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=CONTEXT_LENGTH, hidden_act="quick_gelu",
            projection_dim=hidden,
        ))
    sd = StableDiffusion(name, unet, vae, text_encoder, clip_tokenizer(), dict(SD15_SCHEDULER), tiny=True,
                         image_size=image_size)
    for m in (sd.unet, sd.vae, sd.text_encoder):
        # nn.Module.to, not diffusers' override, which warns about fp32-only modules SD-1.5 lacks.
        nn.Module.to(m, dtype=dtype)
    return _finish(sd, device)


def _finish(sd: StableDiffusion, device: torch.device) -> StableDiffusion:
    for m in (sd.unet, sd.vae, sd.text_encoder):
        nn.Module.to(m, device).eval().requires_grad_(False)
    return sd


def load_safety_checker(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Any:
    """SD-1.5's safety checker and its image processor, as a pair."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    root = files["safety_checker/config.json"].parent.parent
    checker = StableDiffusionSafetyChecker.from_pretrained(root, subfolder="safety_checker", torch_dtype=dtype,
                                                           variant="fp16", local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(root, subfolder="feature_extractor", local_files_only=True)
    return checker.to(device).eval(), processor
