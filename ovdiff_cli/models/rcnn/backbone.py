"""ResNet-50 and its feature pyramid, named as detectron2 names them (docs/design.md §3).

Every conv of the ResNet and of the FPN is bias-free and followed by batch norm in eval mode
(CutLER trains with synchronised batch norm, whose inference is plain batch norm on the running
statistics). The stride of a downsampling bottleneck sits in its 3 × 3 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (blocks, bottleneck width, output channels, stride of the first block) of res2 … res5.
RESNET50_STAGES = ((3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2))
FPN_CHANNELS = 256


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by batch norm; the norm's keys are ``<conv>.norm.*`` as in the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1 × 1 → 3 × 3 (stride here) → 1 × 1, plus a projected shortcut when the shape changes."""

    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if (cin != cout or stride != 1) else None
        self.conv1 = ConvNorm(cin, width, 1)
        self.conv2 = ConvNorm(width, width, 3, stride=stride, padding=1)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv2(F.relu(self.conv1(x))))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class Stem(nn.Module):
    """7 × 7 stride-2 conv, then a 3 × 3 stride-2 max pool: [B, 3, H, W] → [B, 64, H/4, W/4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet50(nn.Module):
    """[B, 3, H, W] → {res2: stride 4, 256 ch; res3: 8, 512; res4: 16, 1024; res5: 32, 2048}."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        cin = 64
        for level, (blocks, width, cout, stride) in enumerate(RESNET50_STAGES, start=2):
            stage = [Bottleneck(cin if b == 0 else cout, width, cout, stride if b == 0 else 1) for b in range(blocks)]
            self.add_module(f"res{level}", nn.Sequential(*stage))
            cin = cout

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for level in range(2, 6):
            x = getattr(self, f"res{level}")(x)
            out[f"res{level}"] = x
        return out


class ResNetFPN(nn.Module):
    """The backbone: [B, 3, H, W] (H, W multiples of 32) → {p2 … p6}, 256 channels, strides 4 … 64.

    Top-down: each level is its normed 1 × 1 lateral plus the coarser level's sum upsampled ×2
    (nearest), then a normed 3 × 3 output conv; p6 is p5 subsampled (max pool, kernel 1, stride 2).
    """

    size_divisibility = 32

    def __init__(self) -> None:
        super().__init__()
        self.bottom_up = ResNet50()
        for level, (_, _, cin, _) in enumerate(RESNET50_STAGES, start=2):
            self.add_module(f"fpn_lateral{level}", ConvNorm(cin, FPN_CHANNELS, 1))
            self.add_module(f"fpn_output{level}", ConvNorm(FPN_CHANNELS, FPN_CHANNELS, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.bottom_up(x)
        merged = getattr(self, "fpn_lateral5")(res["res5"])
        out = {"p5": getattr(self, "fpn_output5")(merged)}
        for level in (4, 3, 2):
            top_down = F.interpolate(merged, scale_factor=2.0, mode="nearest")
            merged = getattr(self, f"fpn_lateral{level}")(res[f"res{level}"]) + top_down
            out[f"p{level}"] = getattr(self, f"fpn_output{level}")(merged)
        out["p6"] = F.max_pool2d(out["p5"], kernel_size=1, stride=2, padding=0)
        return {f"p{level}": out[f"p{level}"] for level in range(2, 7)}
