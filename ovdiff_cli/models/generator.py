"""Stable Diffusion as a :class:`~ovdiff_cli.models.interfaces.Generator` that records cross-attention.

Sampling runs diffusers' own ``StableDiffusionPipeline`` with a DPM-Solver++ scheduler built from
the model's scheduler configuration. Recording swaps in an attention processor on the UNet's 16
cross-attention layers for the duration of one call (diffusers' processor API) and restores the
original processors afterwards. The processor computes the attention probabilities explicitly,
so it can hand the conditional half of them to the recorder (docs/method.md §1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ovdiff_cli.core.attention import accumulate_maps
from ovdiff_cli.models.interfaces import Generation
from ovdiff_cli.models.sd import LATENT_FACTOR, StableDiffusion

class AttentionRecorder:
    """Accumulates the maps of chosen text positions for the last ``n_images`` items of each batch.

    With classifier-free guidance the UNet batch is [unconditional, conditional]; the
    conditional half is the last ``n_images`` rows. ``attn`` [n_images, L, T, G, G] float32 and
    ``counts`` [n_images, L] int64 live on the device. G is the latent side (64 for SD at 512²):
    every layer's maps are brought to the finest attention grid.
    """

    def __init__(self, n_images: int, n_layers: int, positions: Sequence[int], device: torch.device,
                 grid: int = 64) -> None:
        self.n_images = n_images
        self.grid = grid
        self.positions = torch.tensor(list(positions), dtype=torch.long, device=device)
        t = len(positions)
        self.attn = torch.zeros(n_images, n_layers, t, grid, grid, device=device)
        self.counts = torch.zeros(n_images, n_layers, dtype=torch.int64, device=device)

    def add(self, layer: int, probs: torch.Tensor) -> None:
        """probs [B, heads, Q, 77] of one layer call; only the last ``n_images`` rows are recorded."""
        cond = probs[-self.n_images :]
        self.attn[:, layer] += accumulate_maps(cond, self.positions, self.grid)
        self.counts[:, layer] += cond.shape[1]


class RecordingProcessor:
    """A cross-attention processor that computes softmax(QKᵀ/√d) explicitly and records it."""

    def __init__(self, recorder: AttentionRecorder, layer: int) -> None:
        self.recorder = recorder
        self.layer = layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B·heads, Q, K]
        self.recorder.add(self.layer, probs.view(batch, attn.heads, probs.shape[1], probs.shape[2]))

        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class recording:  # noqa: N801 - used as a context manager: `with recording(sd, recorder):`
    """Install :class:`RecordingProcessor` on every cross-attention layer; restore on exit."""

    def __init__(self, sd: StableDiffusion, recorder: AttentionRecorder) -> None:
        self.sd = sd
        self.recorder = recorder
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> AttentionRecorder:
        unet = self.sd.unet
        self.saved = dict(unet.attn_processors)
        index = {name + ".processor": i for i, (name, _) in enumerate(self.sd.cross_attention_layers())}
        unet.set_attn_processor({name: RecordingProcessor(self.recorder, index[name]) if name in index else proc
                                 for name, proc in self.saved.items()})
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        self.sd.unet.set_attn_processor(self.saved)


class DiffusersGenerator:
    """Stable Diffusion networks as a recording :class:`Generator` (and :class:`ImageAttender`)."""

    def __init__(self, sd: StableDiffusion) -> None:
        self.sd = sd
        self.name = sd.name
        self.tiny = sd.tiny
        self.image_size = sd.image_size
        self.n_layers = len(sd.cross_attention_layers())

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """(B, latent channels, S/8, S/8): the VAE halves the side three times."""
        side = self.image_size // LATENT_FACTOR
        return (batch, int(self.sd.unet.config.in_channels), side, side)

    # -- text -----------------------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        """Token strings of ``text`` without BOS/EOS and without truncation."""
        ids = self.sd.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
        return list(self.sd.tokenizer.convert_ids_to_tokens(ids))

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.sd.cross_attention_layers()]

    # -- sampling -------------------------------------------------------------------------------
    def scheduler(self, settings: dict[str, Any]) -> Any:
        """DPM-Solver++ from the model's noise schedule with the sampler settings of docs/method.md §1."""
        from diffusers import DPMSolverMultistepScheduler

        base = {k: v for k, v in self.sd.scheduler_config.items() if not k.startswith("_")}
        chosen = {k: v for k, v in settings.items() if k != "name"}
        return DPMSolverMultistepScheduler.from_config({**base, **chosen})

    def pipeline(self, scheduler_settings: dict[str, Any]) -> Any:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(vae=self.sd.vae, text_encoder=self.sd.text_encoder, tokenizer=self.sd.tokenizer,
                                       unet=self.sd.unet, scheduler=self.scheduler(scheduler_settings),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], negative_prompt: str, noise: torch.Tensor, *, steps: int,
                 guidance: float, record_positions: Sequence[int] | None,
                 scheduler: dict[str, Any] | None = None) -> Generation:
        """Draw ``len(prompts)`` images from initial latents ``noise`` [B, 4, h, w] (8h = image side).

        Returns images [B, 3, 8h, 8w] in [0, 1] (float32, on the CPU) and, when positions are
        given, the recorded attention [B, 16, T, h, w] and counts [B, 16] (on the CPU).
        """
        from ovdiff_cli.core.settings import SampleSettings

        pipe = self.pipeline(scheduler or SampleSettings().scheduler)
        b = len(prompts)
        latents = noise.to(self.sd.device, self.sd.dtype)
        kwargs = {"prompt": list(prompts), "negative_prompt": [negative_prompt] * b, "latents": latents,
                  "num_inference_steps": steps, "guidance_scale": guidance, "output_type": "pt",
                  "height": noise.shape[-2] * LATENT_FACTOR,
                  "width": noise.shape[-1] * LATENT_FACTOR}
        if record_positions is None:
            images = pipe(**kwargs).images
            return Generation(images.float().cpu())
        recorder = AttentionRecorder(b, self.n_layers, record_positions, self.sd.device, noise.shape[-1])
        with recording(self.sd, recorder):
            images = pipe(**kwargs).images
        return Generation(images.float().cpu(), recorder.attn.cpu(), recorder.counts.cpu())

    # -- attention of existing images -----------------------------------------------------------
    @torch.no_grad()
    def attend(self, images: torch.Tensor, prompt: str, timesteps: Sequence[int], record_positions: Sequence[int],
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-noise images [B, 3, S, S] in [0, 1] at each timestep and record the prompt's attention.

        One UNet pass per timestep, conditional only (no guidance). Image k of the batch draws its
        VAE sample and its noise from a CPU generator of its own seeded ``seed + k``, so an image's
        result does not depend on the batch it is in (call with ``seed`` = base + index of the
        batch's first image). Returns attention [B, 16, T, S/8, S/8] and counts [B, 16] on the CPU.
        """
        from diffusers import DDPMScheduler

        sd = self.sd
        b = images.shape[0]
        gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(b)]

        def draw(shape: torch.Size) -> torch.Tensor:  # [B, ...]: one generator per image
            return torch.stack([torch.randn(shape[1:], generator=g) for g in gens])

        x = (images.to(sd.device, sd.dtype) * 2 - 1)
        dist = sd.vae.encode(x).latent_dist
        eps_vae = draw(dist.mean.shape).to(sd.device, dist.mean.dtype)
        z0 = (dist.mean + dist.std * eps_vae) * sd.vae_scale
        ddpm = DDPMScheduler.from_config({k: v for k, v in sd.scheduler_config.items() if not k.startswith("_")})
        context = sd.encode_text([prompt] * b)
        recorder = AttentionRecorder(b, self.n_layers, record_positions, sd.device, z0.shape[-1])
        with recording(sd, recorder):
            for t in timesteps:
                noise = draw(z0.shape).to(sd.device, z0.dtype)
                tt = torch.full((b,), int(t), device=sd.device, dtype=torch.long)
                zt = ddpm.add_noise(z0, noise, tt)
                sd.unet(zt, tt, encoder_hidden_states=context)
        return recorder.attn.cpu(), recorder.counts.cpu()


def as_generator(obj: Any) -> Any:
    """The :class:`Generator` for a ``generator`` slot's object (SD networks get the adapter)."""
    if isinstance(obj, StableDiffusion):
        return DiffusersGenerator(obj)
    return obj


class SafetyFilter:
    """SD's safety checker as a yes/no per image."""

    def __init__(self, checker_and_processor: tuple[Any, Any]) -> None:
        self.checker, self.processor = checker_and_processor

    @torch.no_grad()
    def flags(self, images: torch.Tensor) -> list[bool]:
        """images [B, 3, S, S] in [0, 1] → whether each is flagged as not safe for work."""
        arrays = (images.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        device = next(self.checker.parameters()).device
        dtype = next(self.checker.parameters()).dtype
        pixels = self.processor(list(arrays), return_tensors="pt").pixel_values.to(device, dtype)
        _, flagged = self.checker(images=arrays.astype(np.float32) / 255.0, clip_input=pixels)
        return [bool(f) for f in flagged]
