"""CLIP through open_clip: OpenAI ViT-B/16 for the paper, a toy CLIP for the tiny preset.

One object serves both CLIP roles of the method: global image/text embeddings for the
category pre-filter (docs/method.md §6) and dense keys of a vision block as features (§4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ovdiff_cli.core.tokens import CONTEXT_LENGTH, VOCAB_SIZE

#: CLIP's own normalisation statistics (docs/method.md §4.1, `--clip-norm clip`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CLIP_REPO = "timm/vit_base_patch16_clip_224.openai"
CLIP_FILES: tuple[tuple[str, ...], ...] = (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)


@dataclass
class OpenClip:
    """An open_clip CLIP model and its tokenizer on one device and dtype."""

    name: str
    model: Any
    tokenizer: Any
    tiny: bool

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def patch(self) -> int:
        return int(self.model.visual.patch_size[0])

    @property
    def width(self) -> int:
        """Channels of the vision transformer's tokens (the dense key dimension)."""
        return int(self.model.visual.conv1.out_channels)

    @property
    def image_size(self) -> int:
        """Side of the square input the global embedding expects (224 for ViT-B/16)."""
        return int(self.model.visual.image_size[0])

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] (S = :attr:`image_size`) → unit embeddings [B, E].

        Normalised here with CLIP's own statistics, as the pre-filter of docs/method.md §6 does.
        """
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        x = (images.to(self.device, torch.float32) - mean) / std
        emb = self.model.encode_image(x.to(self.dtype))
        return F.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts → unit embeddings [T, E] (77 tokens each, truncated with EOS kept by open_clip)."""
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def keys(self, images: torch.Tensor, block: int = -2, output: bool = False) -> torch.Tensor:
        """Dense keys of vision block ``block`` (−2 = second to last), CLS dropped: [B, D, h, w].

        ``images`` [B, 3, H, W] are already normalised (the statistics are a feature setting).
        ``output``: the block's output tokens instead of its keys (docs/method.md's "CLIP token").

        Positions are interpolated bicubically when the grid differs from the trained one.
        """
        v = self.model.visual
        x = images.to(self.device, self.dtype)
        x = v.conv1(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + _pos_embed(v.positional_embedding, h, w).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        b_idx = block % len(blocks)
        # Older open_clip runs its blocks sequence-first; the blocks then expect [N, B, D].
        seq_first = not getattr(v.transformer, "batch_first", True)
        x = x.transpose(0, 1) if seq_first else x
        for blk in blocks[: b_idx + 1 if output else b_idx]:
            x = blk(x)
        x = x.transpose(0, 1) if seq_first else x
        if output:
            return x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[-1], h, w)
        target = blocks[b_idx]
        d = x.shape[-1]
        attn = target.attn  # nn.MultiheadAttention: in_proj holds q, k, v stacked
        k = F.linear(target.ln_1(x), attn.in_proj_weight[d : 2 * d], attn.in_proj_bias[d : 2 * d])
        return k[:, 1:].transpose(1, 2).reshape(x.shape[0], d, h, w)


def _pos_embed(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Positional embedding [1+h*w, D] resized bicubically from the trained square grid."""
    g = int(round((pos.shape[0] - 1) ** 0.5))
    if (h, w) == (g, g):
        return pos
    grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], grid.flatten(2).squeeze(0).T.to(pos.dtype)], dim=0)


def load_openai_b16(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> OpenClip:
    """OpenAI CLIP ViT-B/16 from a cached open_clip checkpoint (QuickGELU, as OpenAI trained it)."""
    import open_clip

    path = files[CLIP_FILES[0][0]]
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(path), device=device, precision="fp32")
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    return OpenClip("openai/clip-vit-base-patch16", model, open_clip.get_tokenizer("ViT-B-16"), tiny=False)


def build_tiny_clip(device: torch.device, dtype: torch.dtype, seed: int = 0) -> OpenClip:
    """A toy open_clip CLIP (ViT with patch 16 at 224, 4 blocks), random weights from ``seed``."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg={"layers": 4, "width": 32, "patch_size": 16, "image_size": 224, "head_width": 8},
            text_cfg={"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": 32, "heads": 4,
                      "layers": 2},
            quick_gelu=True,
        )
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return OpenClip("tiny-clip", model, open_clip.get_tokenizer("ViT-B-16"), tiny=True)


def token_count(clip: OpenClip, text: str) -> int:
    """Tokens of ``text`` in CLIP's 77-token context, BOS and EOS included (longer texts get cut)."""
    return len(clip.tokenizer.encode(text)) + 2
