"""Fixtures of the stage tests: the red/green image and bank that the colour preset
(``colour_preset`` in tests/conftest.py) segments by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write_rg_bank


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    """A folder with bank.dino.safetensors of red (1, 0) and green (0, 1), see tests.helpers.write_rg_bank."""
    return write_rg_bank(tmp_path / "banks")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """rg.png, 96 wide × 64 high: the left half red, the right half green."""
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48, 0] = 255   # left half red
    rgb[:, 48:, 1] = 255   # right half green
    Image.fromarray(rgb).save(tmp_path / "rg.png")
    return tmp_path / "rg.png"
