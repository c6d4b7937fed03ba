"""`ovdiff attribute`: maps from the recorded attention (by hand from the file), another phrase,
re-noising for images without a recording, skip / overwrite, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovdiff_cli.cli import main
from ovdiff_cli.formats.supportset import SupportSet
from tests.helpers import FAST, attribution_by_hand, files_of, one_line_error

MODELS = {"preset": "tiny", "tiny": True, "components": {}}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("att") / "support"
    result = CliRunner().invoke(main, ["sample", "donut with chocolate glaze", *FAST, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out / "donut-with-chocolate-glaze"


def test_attribution_of_the_class_phrase_equals_the_hand_computation(runner, sampled: Path) -> None:
    result = runner.invoke(main, ["attribute", "-"], input=f"{sampled}\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(sampled / "attribution.safetensors")]
    s = SupportSet(sampled)
    rec, att = s.read_crossattn(), s.read_attribution()
    # "donut with chocolate glaze" = positions 6..9 = indices 5..8 of the recorded tokens
    assert rec.phrase_positions.tolist() == [6, 7, 8, 9]
    a64, a = attribution_by_hand(rec, [5, 6, 7, 8], list(range(16)), 128)
    assert att.maps.shape == (3, 128, 128) and att.maps64.shape == (3, 16, 16)
    assert np.allclose(att.maps64.numpy(), a64, atol=1e-5)
    assert np.allclose(att.maps.numpy(), a, atol=1e-5)
    assert att.maps.amin(dim=(1, 2)).eq(0).all() and att.maps.amax(dim=(1, 2)).eq(1).all()
    assert att.meta["source"] == "recorded" and att.meta["reference"] is True
    assert att.meta["positions"] == [6, 7, 8, 9] and att.meta["class"] == "donut with chocolate glaze"


def test_a_rerun_skips_and_other_settings_need_overwrite(runner, sampled: Path) -> None:
    assert runner.invoke(main, ["attribute", str(sampled)]).exit_code == 0
    before = files_of(sampled)
    assert runner.invoke(main, ["attribute", str(sampled)]).exit_code == 0
    assert files_of(sampled) == before

    line = one_line_error(runner.invoke(main, ["attribute", str(sampled), "--attn-layers", "6"]))
    assert "attribution.safetensors" in line and "--overwrite" in line
    result = runner.invoke(main, ["attribute", str(sampled), "--attn-layers", "6", "--overwrite"])
    assert result.exit_code == 0, result.output
    s = SupportSet(sampled)
    _, a = attribution_by_hand(s.read_crossattn(), [5, 6, 7, 8], [6], 128)
    assert np.allclose(s.read_attribution().maps.numpy(), a, atol=1e-5)
    assert s.read_attribution().meta["settings"]["layers"] == [6]
    assert runner.invoke(main, ["attribute", str(sampled), "--overwrite"]).exit_code == 0


def test_another_phrase_of_the_prompt(runner, sampled: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sampled, copy)
    (copy / "attribution.safetensors").unlink(missing_ok=True)
    result = runner.invoke(main, ["attribute", str(copy), "--phrase", "Chocolate glaze"])
    assert result.exit_code == 0, result.output
    s = SupportSet(copy)
    att = s.read_attribution()
    assert att.meta["positions"] == [8, 9] and att.meta["tokens"] == ["chocolate</w>", "glaze</w>"]
    _, a = attribution_by_hand(s.read_crossattn(), [7, 8], list(range(16)), 128)
    assert np.allclose(att.maps.numpy(), a, atol=1e-5)

    line = one_line_error(runner.invoke(main, ["attribute", str(copy), "--phrase", "sprinkles", "--overwrite"]))
    assert "'sprinkles'" in line and "A good picture of a donut with chocolate glaze" in line


def test_renoising_attributes_images_without_a_recording(runner, tmp_path: Path) -> None:
    photos = SupportSet(tmp_path / "photos")
    rng = np.random.default_rng(0)
    photos.images_dir.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(photos.image_path(0))
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(photos.image_path(1))

    line = one_line_error(runner.invoke(main, ["attribute", str(photos.path)]))
    assert "crossattn.safetensors" in line and "--renoise" in line

    args = ["attribute", str(photos.path), "--renoise", "--phrase", "red apple", "--models", "tiny"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    att = photos.read_attribution()
    assert att.maps.shape == (2, 128, 128) and att.maps64.shape == (2, 16, 16)
    assert att.meta["source"] == "renoise" and att.meta["reference"] is False
    assert att.meta["prompt"] == "A good picture of a red apple" and att.meta["positions"] == [6, 7]
    assert att.meta["timesteps"] == [100, 250, 400, 550, 700]
    assert att.maps.amax(dim=(1, 2)).eq(1).all()
    first = photos.attribution_path.read_bytes()
    photos.attribution_path.unlink()
    assert runner.invoke(main, args).exit_code == 0
    assert photos.attribution_path.read_bytes() == first  # seeded: the same file again


@pytest.mark.parametrize("folder, parts", [
    (lambda tmp: tmp, lambda tmp: [str(tmp), "ovdiff sample"]),
    (lambda tmp: tmp / "none", lambda tmp: ["does not exist"]),
], ids=["an-empty-folder", "a-missing-folder"])
def test_a_folder_that_is_not_a_support_set(runner, tmp_path: Path, folder, parts) -> None:
    line = one_line_error(runner.invoke(main, ["attribute", str(folder(tmp_path))]))
    assert all(part in line for part in parts(tmp_path)), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layers", ["x", "-1", ","])
def test_bad_layer_lists_are_usage_errors(runner, sampled: Path, layers: str) -> None:
    assert runner.invoke(main, ["attribute", str(sampled), "--attn-layers", layers]).exit_code == 2


def test_a_layer_beyond_the_recording_is_one_line(runner, sampled: Path) -> None:
    line = one_line_error(runner.invoke(main, ["attribute", str(sampled), "--attn-layers", "16"]))
    assert "16 layers" in line


@pytest.mark.parametrize("args, expected", [
    (["--template", "no placeholder"], "--template"),
    (["--template", "photos of {}s", "--phrase", "cat"], "do not follow the template"),
    (["--phrase", " "], "no tokens"),
])
def test_renoise_bad_template_or_phrase_is_one_line(runner, tmp_path: Path, args, expected) -> None:
    photos = SupportSet(tmp_path / "photos")
    photos.write_image(0, np.zeros((8, 8, 3), np.uint8), {})
    line = one_line_error(runner.invoke(main, ["attribute", str(photos.path), "--renoise", "--models", "tiny", *args]))
    assert expected in line
