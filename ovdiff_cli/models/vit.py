"""A plain Vision Transformer in the layout of the DINO and MAE checkpoints, with key read-out.

DINO ViT-B/8 and the long-sequence MAE ViT-B/16 share one state-dict layout (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), pre-norm blocks, qkv with bias, LayerNorm eps 1e-6 and exact GELU. Writing the block
out here makes the dense read-out of METHOD.md §4.1 direct: the *keys* of block ``b`` are its
qkv projection of the pre-attention LayerNorm output, key part, heads concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys of this block for tokens x [B, 1+hw, D] → [B, 1+hw, D] (all heads, concatenated)."""
        d = x.shape[-1]
        return F.linear(self.norm1(x), self.attn.qkv.weight[d : 2 * d], self.attn.qkv.bias[d : 2 * d])


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViT(nn.Module):
    """Encoder only (no head). Input: normalised images [B, 3, H, W] with H, W multiples of the patch."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding [1, 1+h*w, D] for an h × w grid, bicubic from the trained grid."""
        g = self.cfg.pos_grid
        if (h, w) == (g, g):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False).to(cls.dtype)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch tokens with CLS and positions: [B, 1+h*w, D], and the grid h, w."""
        p = self.cfg.patch
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of the patch {p}")
        t = self.patch_embed(x)
        h, w = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embed_for(h, w), h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalised tokens [B, 1+h*w, D]."""
        t, _, _ = self.tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def keys(self, x: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Dense keys of ``block`` (negative counts from the end), CLS dropped: [B, D, h, w]."""
        b_idx = block % self.cfg.depth
        t, h, w = self.tokens(x)
        for blk in self.blocks[:b_idx]:
            t = blk(t)
        k = self.blocks[b_idx].keys(t)[:, 1:]
        return k.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def load_checkpoint(model: ViT, state: dict[str, torch.Tensor]) -> ViT:
    """Load an encoder state dict, dropping MAE decoder entries; strict on the encoder keys."""
    encoder = {k: v for k, v in state.items()
               if not (k.startswith("decoder") or k == "mask_token" or k.startswith("head"))}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the ViT: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model
