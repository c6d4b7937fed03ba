"""Batch size is part of no identity (docs/design.md §4.1).

A batch size only changes the order of floating-point sums, so: identical settings, batch size
included, give byte-identical files; other batch sizes agree within 1e-5; and a rerun with another
batch size reuses what is there instead of calling it a conflict. (sample is the exception: its
batch size decides the noise drawn, so it stays in sample's identity; tested with sample.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.formats.prototypes import read_prototypes
from ovdiff_cli.formats.segmentation import read_scores
from tests.helpers import files_of

EXTRACTORS = ("sd", "dino", "clip")
TOL = 1e-5


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def _prototypes(runner, folder: Path, out: Path, batch: int) -> None:
    args = ["prototype", str(folder), *(a for e in EXTRACTORS for a in ("-x", e)), "--models", "tiny",
            "--batch-size", str(batch), "-o", str(out)]
    _ok(runner.invoke(main, args))


@pytest.fixture(scope="module")
def protos(masked: Path, tmp_path_factory) -> dict[int, Path]:
    """Prototype folders of the same support set made with batch sizes 1 and 3."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("batch")
    out = {b: root / f"protos-{b}" for b in (1, 3)}
    for b, folder in out.items():
        _prototypes(CliRunner(), masked, folder, b)
    return out


def test_prototypes_agree_across_batch_sizes(protos: dict[int, Path]) -> None:
    for e in EXTRACTORS:
        a, b = (read_prototypes(protos[k] / f"cat.{e}.safetensors") for k in (1, 3))
        for side in ("fg", "bg"):
            for name in ("class_proto", "instance", "part"):
                x, y = getattr(getattr(a, side), name), getattr(getattr(b, side), name)
                assert x.shape == y.shape, (e, side, name)
                torch.testing.assert_close(x, y, rtol=0, atol=TOL, msg=f"{e} {side} {name}")
            for name in ("instance_image", "pooled_index", "pooled_label"):
                assert torch.equal(getattr(getattr(a, side), name), getattr(getattr(b, side), name)), (e, side, name)


def test_prototypes_are_byte_identical_for_the_same_batch_size_and_reused_for_another(
        runner, masked: Path, protos: dict[int, Path], tmp_path: Path) -> None:
    _prototypes(runner, masked, tmp_path / "again", 3)
    assert files_of(tmp_path / "again") == files_of(protos[3])
    before = files_of(protos[1])
    _prototypes(runner, masked, protos[1], 3)  # another batch size: the files are reused, not refused
    assert files_of(protos[1]) == before


def test_segment_scores_agree_across_batch_sizes_and_reruns_reuse(runner, masked: Path, protos: dict[int, Path],
                                                                   tmp_path: Path) -> None:
    banks = tmp_path / "banks"
    _ok(runner.invoke(main, ["filter-stuff", *(str(protos[1] / f"cat.{e}.safetensors") for e in EXTRACTORS),
                             "--vocab", "cat,", "-o", str(banks)]))
    images = [str(masked / "images" / f"{n:05d}.png") for n in (0, 1, 2)]
    # 64² images in windows of 48 and 32 at stride 16 and the whole image: 14 windows per image,
    # so batch sizes 1 and 4 and images per batch 1 and 2 cut them differently
    common = ["segment", *images, "--bank", str(banks), "--models", "tiny", "--no-prefilter", "--save-scores",
              "--short-side", "64", "--crops", "48,32", "--stride", "16"]
    runs = {(1, 1): tmp_path / "s11", (4, 2): tmp_path / "s42", (4, 1): tmp_path / "s41"}
    for (batch, per), out in runs.items():
        _ok(runner.invoke(main, [*common, "--batch-size", str(batch), "--images-per-batch", str(per),
                                 "-o", str(out)]))
    for n in range(3):
        ref, _ = read_scores(runs[1, 1] / f"{n:05d}.scores.safetensors")
        for key in ((4, 2), (4, 1)):
            other, _ = read_scores(runs[key] / f"{n:05d}.scores.safetensors")
            torch.testing.assert_close(other, ref, rtol=0, atol=TOL, msg=f"image {n}, batch/images {key}")
    before = files_of(runs[1, 1])
    _ok(runner.invoke(main, [*common, "--batch-size", "4", "--images-per-batch", "2", "-o", str(runs[1, 1])]))
    assert files_of(runs[1, 1]) == before  # another batch size reuses the maps
    _ok(runner.invoke(main, [*common, "--batch-size", "1", "--images-per-batch", "1", "-o", str(tmp_path / "same")]))
    assert files_of(tmp_path / "same") == before  # the same batch size gives the same bytes


def test_renoised_attribution_agrees_across_batch_sizes_and_reruns_reuse(masked: Path, tmp_path: Path,
                                                                          runner) -> None:
    """`attribute --renoise` noises each image from a generator of its own (seed 43 + its index), so
    its maps do not depend on the batch the image was in."""
    import shutil

    from ovdiff_cli.formats.supportset import read_attribution

    maps = {}
    for b in (1, 3):
        folder = tmp_path / f"set-{b}"
        shutil.copytree(masked, folder)
        (folder / "attribution.safetensors").unlink(missing_ok=True)
        _ok(runner.invoke(main, ["attribute", str(folder), "--renoise", "--models", "tiny", "--batch-size", str(b)]))
        maps[b] = read_attribution(folder / "attribution.safetensors")
    torch.testing.assert_close(maps[1].maps, maps[3].maps, rtol=0, atol=TOL)
    torch.testing.assert_close(maps[1].maps64, maps[3].maps64, rtol=0, atol=TOL)
    before = (tmp_path / "set-1" / "attribution.safetensors").read_bytes()
    result = runner.invoke(main, ["attribute", str(tmp_path / "set-1"), "--renoise", "--models", "tiny",
                                  "--batch-size", "2"])
    _ok(result)
    assert (tmp_path / "set-1" / "attribution.safetensors").read_bytes() == before  # reused, not redone
