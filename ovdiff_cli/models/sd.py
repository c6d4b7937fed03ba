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

#: SD-1.5's noise schedule (METHOD.md §1), the base a sampler is built from. The tiny preset uses
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
    vae_scale: float = 0.18215

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def cross_attention_layers(self) -> list[tuple[str, nn.Module]]:
        """The UNet's cross-attention modules in execution order: down blocks, mid, up blocks.

        For SD-1.5: 16 layers, indices as the table of METHOD.md §1 (6 = mid block).
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
        enc = self.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
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
    """SD-1.5's layout at toy width, random weights from ``seed``; 512² images ↔ 64² latents."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ovdiff_cli.models.tokenizer import clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(16, 32, 32, 32), cross_attention_dim=32,
            attention_head_dim=8,  # diffusers' legacy name: SD-1.5 configs mean 8 heads by it
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16), norm_num_groups=8, scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
        ))
    sd = StableDiffusion("tiny-sd", unet, vae, text_encoder, clip_tokenizer(), dict(SD15_SCHEDULER), tiny=True)
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
