"""A synthetic world with a known answer, registered through the public model registry.

Three classes, each a saturated hue with its own texture, drawn as ellipses on low-saturation
backgrounds: "ruby" (red, horizontal stripes), "jade" (green, vertical stripes), "cobalt" (blue,
checks). The generator draws one object of the prompt's class per image and records attention
that follows the drawn object; the extractor describes each 4 × 4 block by its saturation-weighted
hue; the scorer embeds an image by how much of each hue it shows. A method that fits together as
docs/method.md says must segment new images of this world almost perfectly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovdiff_cli.models import registry
from ovdiff_cli.models.interfaces import Generation

HUES = {"ruby": 0.0, "jade": 120.0, "cobalt": 240.0}
TEXTURE = {"ruby": "rows", "jade": "columns", "cobalt": "checks"}
SIZE = 64


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey with a faint tint, a gradient and noise: [h, w, 3] in [0, 1]."""
    grey = rng.uniform(0.25, 0.85)
    tint = rng.uniform(-0.04, 0.04, 3)
    ramp = np.linspace(-0.1, 0.1, w)[None, :, None] * rng.choice([-1, 1])
    return np.clip(grey + tint + ramp + rng.normal(0, 0.02, (h, w, 3)), 0, 1)


def paint(image: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator, name: str, label: int,
          box: tuple[int, int, int, int]) -> np.ndarray:
    """Draw an ellipse of class ``name`` inside box (y0, y1, x0, x1); return its mask."""
    h, w = image.shape[:2]
    y0, y1, x0, x1 = box
    cy, cx = rng.uniform(y0 + 0.4 * (y1 - y0), y0 + 0.6 * (y1 - y0)), rng.uniform(x0 + 0.4 * (x1 - x0), x0 + 0.6 * (x1 - x0))
    ry, rx = rng.uniform(0.3, 0.45) * (y1 - y0), rng.uniform(0.3, 0.45) * (x1 - x0)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    hue = math.radians(HUES[name] + rng.uniform(-8, 8))
    sat, val = rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)
    period = rng.uniform(4, 7)
    kind = TEXTURE[name]
    wave = {"rows": np.sin(2 * np.pi * yy / period), "columns": np.sin(2 * np.pi * xx / period),
            "checks": np.sign(np.sin(2 * np.pi * yy / period) * np.sin(2 * np.pi * xx / period))}[kind]
    v = val * (0.8 + 0.2 * wave)
    rgb = np.stack([hsv_to_rgb(hue, sat, v_) for v_ in (v,)], axis=0)[0]
    image[mask] = rgb[mask]
    if labels is not None:
        labels[mask] = label
    return mask


def hsv_to_rgb(hue: float, sat: float, val: np.ndarray) -> np.ndarray:
    """Hue in radians, saturation in [0, 1], value [h, w] → RGB [h, w, 3]."""
    k = [(n + math.degrees(hue) / 60) % 6 for n in (5, 3, 1)]
    return np.stack([val - val * sat * max(0.0, min(x, 4 - x, 1)) for x in k], axis=-1)


class SyntheticGenerator:
    """Draws the prompt's class; attention to the class words follows the drawn object."""

    name = "synthetic-world"
    tiny = True
    image_size = SIZE

    def tokens(self, text: str) -> list[str]:
        return [f"{w}</w>" for w in text.lower().replace(",", " ").split()]

    def layer_names(self) -> list[str]:
        return [f"layer{i}" for i in range(16)]

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 4, SIZE // 8, SIZE // 8)

    def generate(self, prompts: Sequence[str], negative_prompt: str, noise: torch.Tensor, *, steps: int,
                 guidance: float, record_positions: Sequence[int] | None, scheduler: dict | None = None) -> Generation:
        images, attn = [], []
        for prompt, z in zip(prompts, noise):
            seed = int(abs(float(z.float().sum())) * 1e6) % 2**31
            rng = np.random.default_rng(seed)
            name = next(n for n in HUES if n in prompt.lower())
            image = background(rng, SIZE, SIZE)
            mask = paint(image, None, rng, name, 1, (0, SIZE, 0, SIZE))
            images.append(torch.from_numpy(image).permute(2, 0, 1).float())
            if record_positions is not None:
                words = self.tokens(prompt)
                m = torch.from_numpy(mask).float()[None, None]
                smooth = F.avg_pool2d(m, 3, 1, 1)[0, 0]
                maps = [smooth + 0.02 * torch.from_numpy(rng.random((SIZE, SIZE))).float()
                        if words[p - 1] == f"{name}</w>" else torch.full((SIZE, SIZE), 0.3) for p in record_positions]
                attn.append(torch.stack(maps)[None].expand(16, -1, -1, -1))
        out = torch.stack(images)
        if record_positions is None:
            return Generation(out)
        return Generation(out, torch.stack(attn).contiguous(), torch.ones(len(prompts), 16, dtype=torch.int64))


def hue_features(images: torch.Tensor) -> torch.Tensor:
    """Per pixel (s·cos h, s·sin h, (1 − s)/2): [B, 3, H, W]."""
    mx, _ = images.max(dim=1)
    mn, _ = images.min(dim=1)
    sat = (mx - mn) / mx.clamp_min(1e-6)
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    return torch.stack([sat * torch.cos(hue), sat * torch.sin(hue), (1 - sat) / 2], dim=1)


class HueFeatures:
    """Each 4 × 4 block's mean of :func:`hue_features`: D = 3."""

    name = "hue"
    dim = 3

    def settings(self) -> dict:
        return {"extractor": "hue", "block": 4}

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        return window  # sees a test window as it is

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(hue_features(images.float()), 4)


class HueScorer:
    """An image embeds as which class hues it shows (more than 1 % of its pixels); a text as its
    class words. Both are unit vectors over the three classes."""

    name = "hue-scorer"
    image_size = 224

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        f = hue_features(images.float())
        sat = f[:, :2].norm(dim=1)
        angle = torch.rad2deg(torch.atan2(f[:, 1], f[:, 0])) % 360
        shares = [((sat > 0.5) & ((angle - h + 180) % 360 - 180).abs().lt(30)).float().mean(dim=(1, 2))
                  for h in HUES.values()]
        v = (torch.stack(shares, dim=1) > 0.01).float() + 1e-3
        return v / v.norm(dim=1, keepdim=True)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        v = torch.tensor([[float(n in t) for n in HUES] for t in texts]) + 1e-3
        return v / v.norm(dim=1, keepdim=True)


def register(name: str = "synthetic") -> None:
    """Register the synthetic world as the preset ``name`` (replacing an earlier one)."""
    comp = registry.Component
    registry.register_preset(registry.Preset(name, "a synthetic world with a known answer (tests)", {
        "generator": comp("synthetic-generator", "draws ruby, jade, cobalt", lambda f, d, t: SyntheticGenerator(),
                          tiny=True),
        "extractor.hue": comp("hue-features", "saturation-weighted hue", lambda f, d, t: HueFeatures(), tiny=True),
        "scorer": comp("hue-scorer", "hue shares as a CLIP stand-in", lambda f, d, t: HueScorer(), tiny=True),
    }, tiny=True), replace_existing=True)


def test_image(seed: int, names: Sequence[str], vocab: Sequence[str], h: int = 120, w: int = 180) -> tuple[np.ndarray, np.ndarray]:
    """An image with one object of each of ``names`` side by side, and its ground truth (label = vocab index + 1)."""
    rng = np.random.default_rng(seed)
    image = background(rng, h, w)
    labels = np.zeros((h, w), np.uint8)
    step = w // len(names)
    for k, n in enumerate(names):
        paint(image, labels, rng, n, vocab.index(n) + 1, (0, h, k * step, (k + 1) * step))
    return (image * 255).round().astype(np.uint8), labels
