"""The DINO and MAE encoders, built from timm's ViT blocks, with the dense key read-out.

DINO ViT-B/8 and the long-sequence MAE ViT-B/16 share one state-dict layout (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), the layout of timm's ``VisionTransformer``: pre-norm blocks, qkv with bias, LayerNorm
eps 1e-6 and exact GELU. The patch embedding and the blocks are timm's; what is ours is the thin top
that the read-out of docs/method.md §4.1 needs: the *keys* of block ``b`` (its qkv projection of the
pre-attention LayerNorm output, key part, heads concatenated) and the positional embedding brought
to other grids by plain bicubic interpolation.

Why not timm's ``VisionTransformer`` itself: its grid change is antialiased bicubic (values other
than the plain bicubic ovdiff has always used), its constructor draws a random ``pos_embed`` (the
tiny preset's seeded weights would change), and its ``forward`` pools the CLS token where we need
the grid. tests/models/test_vit.py checks all of this against the hand-written ViT it replaced.
timm is imported when a ViT is built, not when this module is imported: the stages import this
module, and most commands never build a ViT.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    """Architecture: patch size, width, depth, heads, and the grid the pos_embed was trained on."""

    patch: int
    dim: int
    depth: int
    heads: int
    pos_grid: int
    mlp_ratio: float = 4.0
    eps: float = 1e-6
    #: How a test window reaches the network (docs/method.md §4.1): True keeps its aspect ratio
    #: (DINO, trained on varied sizes); False squashes it to 448² (MAE, trained at 448²).
    keeps_aspect: bool = False


def block_keys(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Keys of a timm ViT ``block`` for tokens x [B, 1+hw, D] → [B, 1+hw, D] (all heads, concatenated)."""
    d = x.shape[-1]
    qkv = block.attn.qkv
    return F.linear(block.norm1(x), qkv.weight[d : 2 * d], qkv.bias[d : 2 * d])


class ViT(nn.Module):
    """Encoder only (no head). Input: normalised images [B, 3, H, W] with H, W multiples of the patch.

    The layers are constructed, and the parameters registered, in the order of the hand-written ViT
    this replaced: the tiny preset's seeded random weights depend on both, and stay what they were.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        super().__init__()
        self.cfg = cfg
        # No fixed image size: the grid follows the input and positions are interpolated (pos_embed_for).
        self.patch_embed = PatchEmbed(img_size=None, patch_size=cfg.patch, embed_dim=cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, cfg.dim))
        norm = partial(nn.LayerNorm, eps=cfg.eps)
        self.blocks = nn.Sequential(*(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm)
                                      for _ in range(cfg.depth)))
        for blk in self.blocks:
            blk.attn.fused_attn = True  # torch's scaled_dot_product_attention whatever TIMM_FUSED_ATTN says
        self.norm = norm(cfg.dim)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding [1, 1+h*w, D] for an h × w grid, bicubic from the trained grid.

        Plain bicubic (no antialiasing, align_corners False), computed in float32 (docs/method.md §4.1).
        """
        from timm.layers import resample_abs_pos_embed

        g = self.cfg.pos_grid
        return resample_abs_pos_embed(self.pos_embed, new_size=[h, w], old_size=[g, g], num_prefix_tokens=1,
                                      antialias=False)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch tokens with CLS and positions: [B, 1+h*w, D], and the grid h, w."""
        p = self.cfg.patch
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of the patch {p}")
        h, w = x.shape[-2] // p, x.shape[-1] // p
        t = self.patch_embed(x)  # [B, h*w, D], row-major cells
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embed_for(h, w), h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalised tokens [B, 1+h*w, D]."""
        t, _, _ = self.tokens(x)
        return self.norm(self.blocks(t))

    def keys(self, x: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Dense keys of ``block`` (negative counts from the end), CLS dropped: [B, D, h, w]."""
        b_idx = block % self.cfg.depth
        t, h, w = self.tokens(x)
        for blk in self.blocks[:b_idx]:
            t = blk(t)
        k = block_keys(self.blocks[b_idx], t)[:, 1:]
        return k.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def load_checkpoint(model: ViT, state: dict[str, torch.Tensor]) -> ViT:
    """Load an encoder state dict, dropping MAE decoder entries; strict on the encoder keys."""
    encoder = {k: v for k, v in state.items()
               if not (k.startswith("decoder") or k == "mask_token" or k.startswith("head"))}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the ViT: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model
