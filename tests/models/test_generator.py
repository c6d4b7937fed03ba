"""Cross-attention recording on the tiny SD (docs/method.md §1): what the processor records equals
softmax(QKᵀ/√d) computed directly from a layer's weights and inputs, the conditional half only;
recording changes nothing in the image and restores the processors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovdiff_cli.models import registry
from ovdiff_cli.models.generator import AttentionRecorder, DiffusersGenerator, recording
from ovdiff_cli.models.sd import StableDiffusion

STEPS = 2
POSITIONS = [1, 5, 6]


@pytest.fixture(scope="module")
def sd() -> StableDiffusion:
    return registry.load("tiny", "generator")


def direct_maps(module: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor, positions: list[int],
                grid: int) -> torch.Tensor:
    """The second method: per head softmax(QKᵀ/√d) from the layer's own weights, then each head's
    column reshaped, bicubic to ``grid``, clamped and summed over heads. → [B, T, grid, grid]."""
    heads = module.heads
    q = hidden.float() @ module.to_q.weight.float().T
    k = context.float() @ module.to_k.weight.float().T
    b, n_q, inner = q.shape
    d = inner // heads
    q = q.view(b, n_q, heads, d).transpose(1, 2)
    k = k.view(b, -1, heads, d).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # [B, H, Q, 77]
    g = math.isqrt(n_q)
    out = torch.zeros(b, len(positions), grid, grid)
    for i in range(b):
        for j, p in enumerate(positions):
            for h in range(heads):
                m = probs[i, h, :, p].reshape(1, 1, g, g)
                m = F.interpolate(m, size=(grid, grid), mode="bicubic", align_corners=False) if g != grid else m
                out[i, j] += m[0, 0].clamp_min(0)
    return out


@pytest.mark.parametrize("layer", [0, 6, 15])  # first (full grid), mid (upsampled), last
def test_recorded_attention_equals_softmax_of_the_layers_own_q_and_k(sd: StableDiffusion, layer: int) -> None:
    gen = DiffusersGenerator(sd)
    name, module = sd.cross_attention_layers()[layer]
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def grab(_m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append((hidden.detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        noise = torch.randn(gen.noise_shape(2), generator=torch.Generator().manual_seed(0))
        out = gen.generate(["A good picture of a cat", "A good picture of a dog"], "blurry", noise, steps=STEPS,
                           guidance=8.0, record_positions=POSITIONS)
    finally:
        handle.remove()

    grid = gen.noise_shape(1)[-1]
    assert out.attention.shape == (2, 16, len(POSITIONS), grid, grid)
    assert calls and all(h.shape[0] == 4 for h, _ in calls)  # CFG batch: [uncond × 2, cond × 2]
    expected = sum(direct_maps(module, h[2:], c[2:], POSITIONS, grid) for h, c in calls)
    assert torch.allclose(out.attention[:, layer], expected, atol=1e-5, rtol=1e-4)
    # the unconditional half would give something else
    uncond = sum(direct_maps(module, h[:2], c[:2], POSITIONS, grid) for h, c in calls)
    assert not torch.allclose(out.attention[:, layer], uncond, atol=1e-3)
    assert out.counts[:, layer].tolist() == [len(calls) * module.heads] * 2


def test_recording_changes_no_pixel_and_restores_the_processors(sd: StableDiffusion) -> None:
    gen = DiffusersGenerator(sd)
    before = dict(sd.unet.attn_processors)
    noise = torch.randn(gen.noise_shape(2), generator=torch.Generator().manual_seed(1))
    plain = gen.generate(["a cat", "a dog"], "", noise, steps=STEPS, guidance=8.0, record_positions=None)
    recorded = gen.generate(["a cat", "a dog"], "", noise, steps=STEPS, guidance=8.0, record_positions=[1, 2])
    assert plain.attention is None
    assert torch.allclose(plain.images, recorded.images, atol=1e-5)
    after = sd.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_processors_are_restored_after_an_error(sd: StableDiffusion) -> None:
    before = dict(sd.unet.attn_processors)
    recorder = AttentionRecorder(1, 16, [1], torch.device("cpu"), grid=16)
    with pytest.raises(RuntimeError, match="boom"), recording(sd, recorder):
        assert any(type(p).__name__ == "RecordingProcessor" for p in sd.unet.attn_processors.values())
        raise RuntimeError("boom")
    after = sd.unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_self_attention_is_not_recorded(sd: StableDiffusion) -> None:
    recorder = AttentionRecorder(1, 16, [1], torch.device("cpu"), grid=16)
    with recording(sd, recorder):
        kinds = {name: type(p).__name__ for name, p in sd.unet.attn_processors.items()}
    assert sum(v == "RecordingProcessor" for v in kinds.values()) == 16
    assert all(v != "RecordingProcessor" for k, v in kinds.items() if "attn1" in k)


def test_attend_records_every_timestep_on_existing_images(sd: StableDiffusion) -> None:
    gen = DiffusersGenerator(sd)
    images = torch.rand(2, 3, gen.image_size, gen.image_size, generator=torch.Generator().manual_seed(2))
    attn, counts = gen.attend(images, "A good picture of a cat", [100, 500], [6], seed=3)
    assert attn.shape == (2, 16, 1, 16, 16)
    assert counts.tolist() == [[2 * 8] * 16] * 2
    assert (attn >= 0).all() and attn.sum() > 0
    again, _ = gen.attend(images, "A good picture of a cat", [100, 500], [6], seed=3)
    assert torch.equal(attn, again)


def test_tokens_are_the_tokenizers_without_special_tokens(sd: StableDiffusion) -> None:
    gen = DiffusersGenerator(sd)
    assert gen.tokens("A good picture of a potted plant") == [
        "a</w>", "good</w>", "picture</w>", "of</w>", "a</w>", "potted</w>", "plant</w>"]
    assert len(gen.layer_names()) == 16 and gen.layer_names()[6].startswith("mid_block")
    assert gen.noise_shape(3) == (3, 4, 16, 16)


def test_the_sampler_is_dpm_solver_pp_with_diffusers_0_14_spacing(sd: StableDiffusion) -> None:
    from ovdiff_cli.core.settings import SampleSettings

    sched = DiffusersGenerator(sd).scheduler(SampleSettings().scheduler)
    sched.set_timesteps(30)
    # docs/method.md §1: round(linspace(0, 999, 31)) reversed, the last (0) dropped; final update to t = 0
    # (numpy's linspace gives 499.49999999999994 at i = 15, hence 499, as diffusers 0.14 had it)
    import numpy as np

    expected = np.linspace(0, 999, 31).round()[::-1][:-1].astype(int).tolist()
    assert expected[14:17] == [533, 499, 466]
    assert sched.timesteps.tolist() == expected
    # the last update goes to timestep 0 as diffusers 0.14 did (σ of ᾱ_0 = 1 − β_0, not σ = 0)
    alpha0 = 1 - 0.00085
    assert float(sched.sigmas[-1]) == pytest.approx(math.sqrt((1 - alpha0) / alpha0), rel=1e-4)
    cfg = sched.config
    assert (cfg.algorithm_type, cfg.solver_order, cfg.prediction_type) == ("dpmsolver++", 2, "epsilon")
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule, cfg.num_train_timesteps) == (
        0.00085, 0.012, "scaled_linear", 1000)


def test_attend_noises_the_vae_sample_at_each_timestep_in_turn(sd: StableDiffusion) -> None:
    from diffusers import DDPMScheduler

    gen = DiffusersGenerator(sd)
    images = torch.rand(1, 3, gen.image_size, gen.image_size, generator=torch.Generator().manual_seed(4))
    calls = []
    handle = sd.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append((args[0].clone(), args[1].clone())), with_kwargs=True)
    try:
        gen.attend(images, "A good picture of a cat", [100, 500], [6], seed=7)
    finally:
        handle.remove()
    # the second method: the same draws from a generator seeded 7 — the VAE sample first, then one ε per timestep
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        dist = sd.vae.encode(images * 2 - 1).latent_dist
    z0 = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)) * sd.vae_scale
    abar = DDPMScheduler.from_config(sd.scheduler_config).alphas_cumprod
    assert [int(t[0]) for _, t in calls] == [100, 500]
    for (zt, _), t in zip(calls, (100, 500)):
        eps = torch.randn(z0.shape, generator=g)
        torch.testing.assert_close(zt, abar[t].sqrt() * z0 + (1 - abar[t]).sqrt() * eps, atol=1e-5, rtol=1e-4)


def test_attend_gives_each_image_its_own_noise_whatever_its_batch(sd: StableDiffusion) -> None:
    """Image k of a batch seeded s is noised as the lone image seeded s + k, so `attribute --renoise`
    gives the same maps for any --batch-size (README, attribute)."""
    gen = DiffusersGenerator(sd)
    images = torch.rand(3, 3, gen.image_size, gen.image_size, generator=torch.Generator().manual_seed(5))
    together, counts = gen.attend(images, "A good picture of a cat", [100, 500], [6], seed=43)
    alone = torch.cat([gen.attend(images[k : k + 1], "A good picture of a cat", [100, 500], [6], seed=43 + k)[0]
                       for k in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    # and the images do differ: a shared noise would not be caught by equal inputs
    assert not torch.allclose(together[0], together[1])
