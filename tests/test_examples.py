"""The example scripts run as they are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.skipif(shutil.which("ovdiff") is None, reason="the ovdiff command is not installed (pip install -e .)")
def test_models_example() -> None:
    out = subprocess.run(["bash", str(ROOT / "examples" / "models.sh")], capture_output=True, text=True,
                         env=ENV, check=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "4 models ready"


def test_python_api_example(tmp_path: Path) -> None:
    from ovdiff_cli.formats.prototypes import read_bank
    from ovdiff_cli.models import load

    subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(tmp_path)], env=ENV,
                   check=True, capture_output=True, timeout=120)
    bank = read_bank(tmp_path / "bank.text.safetensors")
    assert bank.vocabulary.names == ["cat", "dog", "sky"]
    assert bank.fg.owner.tolist() == [1, 2, 3]
    expected = load("tiny", "scorer").encode_texts(["a cat", "a dog", "a sky"])
    torch.testing.assert_close(bank.fg.vectors, expected)


@pytest.mark.skipif(shutil.which("ovdiff") is None, reason="the ovdiff command is not installed (pip install -e .)")
def test_support_sets_example(tmp_path: Path) -> None:
    out = subprocess.run(["bash", str(ROOT / "examples" / "support_sets.sh")], capture_output=True, text=True,
                         env={**ENV, "OUT": str(tmp_path / "support")}, check=True, timeout=300).stdout
    assert out.splitlines() == ["cat\t[2, 128, 128]\tcat</w>",
                                "donut with chocolate glaze\t[2, 128, 128]\tdonut</w> with</w> chocolate</w> glaze</w>"]
