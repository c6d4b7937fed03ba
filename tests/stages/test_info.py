"""`ovdiff info` on support-set folders and paths from stdin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.errors import BadFile
from ovdiff_cli.core.attention import Attribution
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.stages.info import describe

META = {"class": "cat", "models": {"preset": "tiny", "tiny": True, "components": {}}, "inputs": {}}


def _support_set(folder: Path, n: int = 2) -> SupportSet:
    s = SupportSet(folder)
    for i in range(n):
        s.write_image(i, np.full((8, 8, 3), 10 * i, dtype=np.uint8), {"class": "cat", "seed": 42})
        s.write_mask(i, np.array([[0, 1], [2, 1]], dtype=np.uint8).repeat(4, 0).repeat(4, 1), {"mode": "fallback"})
    return s


def test_a_support_set_is_checked_file_by_file(tmp_path: Path) -> None:
    s = _support_set(tmp_path / "cat")
    s.write_attribution(Attribution(torch.rand(2, 8, 8), torch.rand(2, 4, 4), META))
    d = describe(s.path)
    assert (d["kind"], d["images"], d["masks"], d["attribution"], d["crossattn"]) == ("support-set", 2, 2, True, False)
    assert d["meta"]["class"] == "cat"

    data = s.attribution_path.read_bytes()
    s.attribution_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadFile, match="attribution.safetensors: .*truncated"):
        describe(s.path)


def test_a_support_set_whose_attribution_counts_other_images_is_bad(tmp_path: Path) -> None:
    s = _support_set(tmp_path / "cat", n=2)
    s.write_attribution(Attribution(torch.rand(3, 8, 8), torch.rand(3, 4, 4), META))
    with pytest.raises(BadFile, match="holds 3 maps, the folder 2 images"):
        describe(s.path)


def test_a_broken_mask_in_a_support_set_is_reported(tmp_path: Path) -> None:
    s = _support_set(tmp_path / "cat")
    s.mask_path(1).write_bytes(b"\x89PNG broken")
    with pytest.raises(BadFile, match="masks/00001.png"):
        describe(s.path)


def test_info_reads_paths_from_stdin(tmp_path: Path, runner) -> None:
    a, b = _support_set(tmp_path / "a"), _support_set(tmp_path / "b", n=1)
    result = runner.invoke(main, ["info", "-"], input=f"{a.path}\n\n{b.path}\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["images"] for line in result.stdout.splitlines()] == [2, 1]
