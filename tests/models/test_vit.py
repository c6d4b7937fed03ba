"""The DINO/MAE encoder built from timm's blocks against the hand-written ViT it replaced
(tests/models/reference_vit.py): same state-dict layout, same weights for the tiny preset, same keys."""

from __future__ import annotations

import pytest
import torch

from ovdiff_cli.models.builtin import DINO_B8, TINY_DINO, TINY_MAE, _tiny_vit
from ovdiff_cli.models.vit import ViT, ViTConfig
from tests.models.reference_vit import ReferenceViT

CPU = torch.device("cpu")

#: The paper's DINO ViT-B/8 (width 768, 12 heads, 28² positions) cut to two blocks to stay quick.
B8_TWO_BLOCKS = ViTConfig(patch=8, dim=768, depth=2, heads=12, pos_grid=28)


def _reference_tiny(cfg: ViTConfig, seed: int) -> ReferenceViT:
    """The tiny preset's ViT as it was built before timm: seed, construct, N(0, 0.02) on all but the norms."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReferenceViT(cfg)
        for name, p in model.named_parameters():
            if "norm" not in name:
                torch.nn.init.normal_(p, std=0.02)
    return model.eval().requires_grad_(False)


def _random_pair(cfg: ViTConfig, seed: int) -> tuple[ViT, ReferenceViT]:
    reference = _reference_tiny(cfg, seed)
    with torch.no_grad():  # LayerNorms off their identity start, so a mix-up of norm1/norm2 would show
        for name, p in reference.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    model = ViT(cfg).eval().requires_grad_(False)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model, reference


def test_the_state_dict_is_the_checkpoints_layout() -> None:
    """The names the official DINO and MAE encoders store (and timm's VisionTransformer uses)."""
    from timm.models.vision_transformer import VisionTransformer

    cfg = ViTConfig(patch=8, dim=16, depth=1, heads=2, pos_grid=4)
    block = [f"blocks.0.{m}.{t}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
             for t in ("weight", "bias")]
    expected = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", *block,
                "norm.weight", "norm.bias"]
    assert list(ViT(cfg).state_dict()) == expected
    assert list(ReferenceViT(cfg).state_dict()) == expected
    timm_vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=0)
    assert sorted(timm_vit.state_dict()) == sorted(expected)


@pytest.mark.parametrize("cfg,seed", [(TINY_DINO, 1), (TINY_MAE, 2)])
def test_the_tiny_preset_draws_the_same_weights_as_before(cfg: ViTConfig, seed: int) -> None:
    model = _tiny_vit(cfg, seed, "tiny")({}, CPU, torch.float32)
    reference = _reference_tiny(cfg, seed)
    assert list(model.state_dict()) == list(reference.state_dict())
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("cfg,sides", [
    (TINY_DINO, [(64, 64), (256, 192), (56, 96), (8, 8)]),     # trained grid 8², larger, other aspect, one cell
    (TINY_MAE, [(128, 128), (448, 448), (64, 160)]),
    (B8_TWO_BLOCKS, [(224, 224), (96, 160)]),
])
def test_keys_and_tokens_equal_the_reference(cfg: ViTConfig, sides: list[tuple[int, int]]) -> None:
    model, reference = _random_pair(cfg, seed=7)
    for side in sides:
        x = torch.randn(2, 3, *side, generator=torch.Generator().manual_seed(side[0] * side[1]))
        with torch.no_grad():
            for block in range(-cfg.depth, 0):
                keys, expected = model.keys(x, block), reference.keys(x, block)
                assert keys.shape == expected.shape == (2, cfg.dim, side[0] // cfg.patch, side[1] // cfg.patch)
                assert (keys - expected).abs().max() <= 1e-5, (side, block)
            assert (model(x) - reference(x)).abs().max() <= 1e-5, side


def test_positions_are_interpolated_plain_bicubic() -> None:
    """The trained grid as stored; any other by bicubic without antialiasing (the hand ViT's rule)."""
    model, reference = _random_pair(TINY_DINO, seed=3)
    assert model.pos_embed_for(8, 8) is model.pos_embed
    for h, w in [(4, 4), (7, 12), (64, 64)]:
        assert torch.equal(model.pos_embed_for(h, w), reference.pos_embed_for(h, w)), (h, w)


def test_the_paper_dino_config_builds_with_timm_blocks() -> None:
    from timm.models.vision_transformer import Block

    model = ViT(DINO_B8)
    assert len(model.blocks) == 12 and all(isinstance(b, Block) for b in model.blocks)
    assert model.pos_embed.shape == (1, 1 + 28 * 28, 768)
    assert all(b.attn.num_heads == 12 and b.attn.fused_attn for b in model.blocks)
