"""Plain helpers shared by the test modules: running commands, reading back what they wrote,
checking one-line errors, and the hand-made extractors and files whose results can be worked out
by hand. Fixtures built from these live in ``tests/conftest.py`` and ``tests/stages/conftest.py``;
no test module imports from another test module."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovdiff_cli.cli import main

# -- running commands and reading back what they wrote ---------------------------------------------

#: The tiny preset's quickest support set: 3 images in batches of 2, 2 denoising steps.
FAST = ["-n", "3", "--batch-size", "2", "--steps", "2", "--models", "tiny"]


def run(runner, *args: str, input: str | None = None):
    """``ovdiff ARGS`` in-process through ``runner`` (a click ``CliRunner``)."""
    return runner.invoke(main, list(args), input=input)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes (to compare whole outputs)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def only_files(folder: Path) -> list[str]:
    """Names of everything in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir())


def one_line_error(result) -> str:
    """The command failed with exit 1 and exactly one ``ovdiff: error:`` line on stderr; returns it."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovdiff: error: "), result.stderr
    return lines[0]


def one_line_with(err: Exception, *parts: str) -> str:
    """The error's message is one line and contains every part."""
    text = str(err)
    assert "\n" not in text
    for part in parts:
        assert part in text, (part, text)
    return text


#: The provenance every ovdiff tensor file must carry (``models`` and ``inputs``); merge it into
#: the metadata of valid crossattn, attribution, prototype and bank files.
PROVENANCE: dict[str, Any] = {"models": {"preset": "tiny", "tiny": True, "components": {}}, "inputs": {}}


# -- another process holding an output lock ----------------------------------------------------------

HOLD = r"""
import sys, time
from ovdiff_cli.formats.lock import locked
with locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def hold_lock(target: Path, seconds: float) -> subprocess.Popen:
    """A second process that takes the lock of ``target`` and keeps it ``seconds``; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


# -- attribution worked out by hand --------------------------------------------------------------------


def attribution_by_hand(rec, tokens: list[int], layers: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """docs/method.md §2 written out plainly from a ``CrossAttention`` recording: each recorded sum
    divided by its map count, averaged over layers and tokens, min–max, bilinear to the image size,
    min–max again. Returns the (N, h, w) maps on the latent grid and the (N, size, size) maps."""
    attn, counts = rec.attn.double().numpy(), rec.counts.double().numpy()
    n = attn.shape[0]
    raw = np.zeros((n, *attn.shape[-2:]))
    for i in range(n):
        for t in tokens:
            raw[i] += sum(attn[i, layer, t] for layer in layers) / sum(counts[i, layer] for layer in layers)
        raw[i] /= len(tokens)
    lo, hi = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    a64 = (raw - lo) / np.maximum(hi - lo, 1e-6)
    up = F.interpolate(torch.from_numpy(a64)[:, None], size=(size, size), mode="bilinear",
                       align_corners=False)[:, 0].numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    return a64, (up - lo) / np.maximum(hi - lo, 1e-6)


# -- hand-made extractors (registered as presets by fixtures in tests/conftest.py) ----------------------

#: 1/√2: the cosine of the diagonal (1, 1)/√2 with either axis.
S = 1 / math.sqrt(2)


class WholeWindows:
    """A test extractor that sees each test window as it is (``window_input`` of the protocol)."""

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        return window


class ColourFeatures(WholeWindows):
    """D = 2: the mean red and green of each 8 × 8 block of the window."""

    name = "dino"
    dim = 2

    def settings(self) -> dict:
        return {"extractor": "dino", "model": "colour"}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(images[:, :2].float(), 8)


class FlatFeatures(WholeWindows):
    """D = 2, the same (1, 0) in every cell: a second extractor that always says "red"."""

    name = "flat"
    dim = 2

    def settings(self) -> dict:
        return {"extractor": "flat"}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        f = torch.zeros(images.shape[0], 2, images.shape[-2] // 8, images.shape[-1] // 8)
        f[:, 0] = 1
        return f


class HandFeatures(WholeWindows):
    """D = 2 on a 2 × 2 grid; image n (grey level 40·n) has channel 0 = 4n + (1, 2; 3, 4), channel 1 = 10·channel 0."""

    name = "dino"
    dim = 2

    def settings(self) -> dict:
        return {"extractor": "dino", "model": "hand"}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for im in images:
            n = round(float(im[0, 0, 0]) * 255 / 40)
            c0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) + 4 * n
            out.append(torch.stack([c0, 10 * c0]))
        return torch.stack(out)


# -- hand-made files -------------------------------------------------------------------------------------


def _bank_side(rows: list[list[float]], owners: list[int]):
    from ovdiff_cli.core.bank import Rows

    n = len(rows)
    return Rows(torch.tensor(rows, dtype=torch.float32).reshape(n, 2), torch.tensor(owners, dtype=torch.long),
                torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))


def write_rg_bank(folder: Path, extractor: str = "dino", bg_mode: str = "all") -> Path:
    """red: fg (1, 0); green: fg (0, 1); one background prototype of red's, the diagonal (none for bg_mode zero)."""
    from ovdiff_cli.formats.prototypes import Bank, write_bank
    from ovdiff_cli.formats.vocabulary import build

    vocab = build("rg", [("red", None, None), ("green", None, None)])
    features = ColourFeatures().settings() if extractor == "dino" else FlatFeatures().settings()
    meta = {"extractor": extractor, "models": {"preset": "colour"}, "inputs": {}, "sources": {},
            "features": features, "settings": {"bg_mode": bg_mode}}
    bg = _bank_side([[S, S]], [1]) if bg_mode != "zero" else _bank_side([], [])
    write_bank(folder / f"bank.{extractor}.safetensors", Bank(_bank_side([[1, 0], [0, 1]], [1, 2]), bg, vocab, meta))
    return folder


def segment_by_colour(runner, *args: str):
    """``ovdiff segment ARGS`` with the colour preset (see ``colour_preset``) at short side 64."""
    return runner.invoke(main, ["segment", *args, "--models", "colour", "--short-side", "64"])


def column_support_set(folder: Path, fg_cols: list[tuple[int, int]]):
    """16 × 16 images; image n's foreground = columns fg_cols[n], background the last two columns."""
    from ovdiff_cli.formats.supportset import SupportSet

    s = SupportSet(folder)
    for n, (a, b) in enumerate(fg_cols):
        s.write_image(n, np.full((16, 16, 3), 30 * n, np.uint8), {"class": folder.name})
        m = np.zeros((16, 16), np.uint8)
        m[:, a:b] = 1
        m[:, 14:] = 2
        s.write_mask(n, m, {"mode": "hand"})
    return s
