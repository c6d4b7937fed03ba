"""Feature extractors (docs/method.md §4.1) on the tiny models: each read-out equals the queries or
keys computed directly from that block's input and weights; shapes and dimensions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdiff_cli.models import registry
from ovdiff_cli.models.extractors import (IMAGENET_MEAN, IMAGENET_STD, SD15_QUERY_CHANNELS, SD_LAYERS, ClipKeys,
                                          SDFeatures, ViTKeys, as_extractor, round_to_patch, sd_feature_dim)

IMAGES = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def imagenet(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_sd_feature_dimensions_of_sd15() -> None:
    assert sd_feature_dim(SD15_QUERY_CHANNELS, SD_LAYERS["default"]) == 7680
    assert sd_feature_dim(SD15_QUERY_CHANNELS, SD_LAYERS["paper-v1"]) == 6400


@pytest.mark.parametrize("layers", ["default", "paper-v1"])
def test_sd_features_are_the_query_projections_of_the_chosen_layers(layers: str) -> None:
    sd = registry.load("tiny", "extractor.sd")
    ex = SDFeatures(sd, layers)
    modules = [sd.cross_attention_layers()[i][1] for i in SD_LAYERS[layers]]
    inputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, kwargs, k=k: inputs.__setitem__(
        k, args[0] if args else kwargs["hidden_states"]), with_kwargs=True) for k, m in enumerate(modules)]
    try:
        feats = ex.features(IMAGES)
    finally:
        for h in hooks:
            h.remove()
    assert feats.shape == (2, ex.dim, 16, 16) and feats.dtype == torch.float32
    assert ex.dim == sum(m.to_q.out_features for m in modules)
    start = 0
    for k, m in enumerate(modules):
        q = inputs[k] @ m.to_q.weight.T                    # the layer's normalised input × W_q
        g = int(q.shape[1] ** 0.5)
        q = q.transpose(1, 2).reshape(2, -1, g, g)
        expected = F.interpolate(q, size=(16, 16), mode="bilinear", align_corners=False) if g != 16 else q
        c = m.to_q.out_features
        torch.testing.assert_close(feats[:, start : start + c], expected)
        start += c


def test_sd_features_use_t200_and_the_same_noise_for_every_image() -> None:
    from diffusers import DDPMScheduler

    sd = registry.load("tiny", "extractor.sd")
    ddpm = DDPMScheduler.from_config(sd.scheduler_config)
    assert float(ddpm.alphas_cumprod[200]) == pytest.approx(0.754, abs=1e-3)  # docs/method.md §4.1
    ex = SDFeatures(sd)
    both = ex.features(IMAGES)
    alone = ex.features(IMAGES[1:])
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-4)  # no dependence on the batch
    assert not torch.allclose(SDFeatures(sd, timestep=500).features(IMAGES[:1]), both[:1])
    assert ex.settings()["timestep"] == 200 and ex.settings()["noise_seed"] == 43


@pytest.mark.parametrize("slot,name,grid", [("extractor.dino", "dino", 16), ("extractor.mae", "mae", 8)])
def test_vit_features_are_the_last_blocks_keys_of_imagenet_normalised_images(slot: str, name: str, grid: int) -> None:
    model = registry.load("tiny", slot)
    ex = as_extractor(name, model)
    assert isinstance(ex, ViTKeys)
    captured = {}
    handle = model.blocks[-1].register_forward_pre_hook(lambda _m, args: captured.update(x=args[0]))
    try:
        model(imagenet(IMAGES))
    finally:
        handle.remove()
    blk, d = model.blocks[-1], model.cfg.dim
    k = F.linear(blk.norm1(captured["x"]), blk.attn.qkv.weight[d : 2 * d], blk.attn.qkv.bias[d : 2 * d])
    expected = k[:, 1:].transpose(1, 2).reshape(2, d, grid, grid)
    feats = ex.features(IMAGES)
    assert feats.shape == (2, d, grid, grid) and ex.dim == d
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm", ["imagenet", "clip"])
def test_clip_features_are_the_second_to_last_blocks_keys(norm: str) -> None:
    from ovdiff_cli.models.clip import CLIP_MEAN, CLIP_STD

    clip = registry.load("tiny", "extractor.clip")
    ex = ClipKeys(clip, norm)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else (CLIP_MEAN, CLIP_STD)
    x = (IMAGES - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    blocks = clip.model.visual.transformer.resblocks
    captured = {}
    handle = blocks[-2].register_forward_pre_hook(lambda _m, args: captured.update(x=args[0]))
    try:
        clip.keys(x, -1)  # runs blocks up to the last, so the second to last sees its input
    finally:
        handle.remove()
    attn, d = blocks[-2].attn, clip.width
    k = F.linear(blocks[-2].ln_1(captured["x"]), attn.in_proj_weight[d : 2 * d], attn.in_proj_bias[d : 2 * d])
    expected = k[:, 1:].transpose(1, 2).reshape(2, d, 8, 8)
    torch.testing.assert_close(ex.features(IMAGES), expected, atol=1e-5, rtol=1e-4)
    assert ex.settings()["norm"] == norm


def test_sides_are_rounded_to_the_patch() -> None:
    x = torch.rand(1, 3, 100, 130)
    assert round_to_patch(x, 16).shape == (1, 3, 96, 128)
    assert round_to_patch(IMAGES, 16) is IMAGES


def test_every_extractor_on_the_tiny_preset() -> None:
    shapes = {}
    for name in ("sd", "dino", "clip", "mae"):
        ex = as_extractor(name, registry.load("tiny", f"extractor.{name}"))
        f = ex.features(IMAGES[:1])
        shapes[name] = tuple(f.shape[1:])
        assert ex.name == name and f.shape[1] == ex.dim and ex.settings()["extractor"] == name
    assert shapes == {"sd": (256, 16, 16), "dino": (32, 16, 16), "clip": (32, 8, 8), "mae": (32, 8, 8)}


def test_clip_token_readout_is_the_blocks_output() -> None:
    clip = registry.load("tiny", "extractor.clip")
    blocks = clip.model.visual.transformer.resblocks
    captured = {}
    handle = blocks[-2].register_forward_hook(lambda _m, _args, out: captured.update(x=out))
    try:
        feats = ClipKeys(clip, readout="token").features(IMAGES)
    finally:
        handle.remove()
    out = captured["x"]
    if not getattr(clip.model.visual.transformer, "batch_first", True):
        out = out.transpose(0, 1)
    torch.testing.assert_close(feats, out[:, 1:].transpose(1, 2).reshape(2, clip.width, 8, 8))
    assert ClipKeys(clip, readout="token").settings()["readout"] == "token"
    assert not torch.allclose(feats, ClipKeys(clip).features(IMAGES))


def test_each_extractor_sees_a_test_window_as_the_method_prescribes() -> None:
    sd = SDFeatures(registry.load("tiny", "extractor.sd"))
    clip = ClipKeys(registry.load("tiny", "extractor.clip"))
    mae = as_extractor("mae", registry.load("tiny", "extractor.mae"))
    dino = as_extractor("dino", registry.load("tiny", "extractor.dino"))
    wide, small, long = torch.rand(3, 448, 597), torch.rand(3, 336, 336), torch.rand(3, 448, 1000)
    assert sd.window_input(wide).shape == (3, 128, 128)      # squashed to the model's size (512² for SD-1.5)
    assert clip.window_input(wide).shape == (3, 448, 448)    # squashed to 448²
    assert mae.window_input(small).shape == (3, 448, 448)
    assert dino.window_input(small).shape == (3, 336, 336)   # as it is up to 448
    assert dino.window_input(wide).shape == (3, 448, 592)    # short side 448 kept, cut to whole patches: 56 × 74
    assert dino.window_input(long).shape == (3, 352, 800)    # long side capped at 800
    assert torch.equal(dino.window_input(small), small)


def test_sd_features_noise_the_latent_at_t200_with_the_seed_43_draw() -> None:
    from diffusers import DDPMScheduler

    sd = registry.load("tiny", "extractor.sd")
    seen = {}
    handle = sd.unet.register_forward_pre_hook(lambda _m, args, kwargs: seen.update(z=args[0], t=args[1]),
                                               with_kwargs=True)
    try:
        SDFeatures(sd).features(IMAGES)
    finally:
        handle.remove()
    dist = sd.vae.encode(IMAGES * 2 - 1).latent_dist
    eps = torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(43))
    z0 = (dist.mean + dist.std * eps) * sd.vae_scale
    a = DDPMScheduler.from_config(sd.scheduler_config).alphas_cumprod[200]
    torch.testing.assert_close(seen["z"], a.sqrt() * z0 + (1 - a).sqrt() * eps, atol=1e-5, rtol=1e-4)
    assert seen["t"].tolist() == [200, 200]


@pytest.mark.parametrize("name", ["sd", "dino", "clip", "mae"])
def test_a_batch_gives_each_images_features_as_it_alone_would(name: str) -> None:
    ex = as_extractor(name, registry.load("tiny", f"extractor.{name}"))
    images = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    batch = ex.features(images)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], ex.features(images[i:i + 1]), atol=1e-5, rtol=0)
