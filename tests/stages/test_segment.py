"""`ovdiff segment` through the command line with a registered hand-made extractor and bank, so
that every label can be worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.formats.candidates import Candidates, write_candidates
from ovdiff_cli.formats.labelmap import PALETTE, read_label_map
from ovdiff_cli.formats.segmentation import read_explanation, read_scores
from tests.helpers import S, files_of, one_line_error, write_rg_bank
from tests.helpers import segment_by_colour as segment


def test_labels_by_hand(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out), "--save-scores",
                     "--explain", "--overlay")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "rg.png")]
    labels = read_label_map(out / "rg.png")
    # 12 cells across: cells 0–5 red (1, 0), 6–11 green (0, 1); upsampled bilinearly to 96 pixels, pixel x
    # reads cell (x + 0.5)/8 − 0.5. Red wins while its weight ≥ 1/√2 (the bg score): x ≤ 45; green from x = 50;
    # in between both are below the background's 1/√2.
    expected = np.zeros(96, np.uint8)
    expected[:46] = 1
    expected[50:] = 2
    assert labels.shape == (64, 96) and (labels == expected[None]).all()
    with Image.open(out / "rg.png") as im:
        assert im.mode == "P" and bytes(im.getpalette()[:9]) == PALETTE[:3].tobytes()
        meta = json.loads(im.info["ovdiff"])
    assert meta["vocabulary"]["classes"][0][0] == "red" and meta["active"] == ["red", "green"]
    assert meta["legend"] == [[0, "background", "#000000"], [1, "red", "#800000"], [2, "green", "#008000"]]
    scores, _ = read_scores(out / "rg.scores.safetensors")
    assert scores.shape == (3, 64, 96)
    assert scores[:, 0, 0].tolist() == pytest.approx([S, 1.0, 0.0], abs=1e-5)
    e = read_explanation(out / "rg.explain.safetensors")
    assert e.rows["dino"][0, 0] == 0 and e.rows["dino"][0, 95] == 1 and e.rows["dino"][0, 47] == 0  # fg rows; bg row 0
    assert e.labels[0, 47] == 0 and e.labels[0, 0] == 1
    with Image.open(out / "rg.overlay.png") as im:
        assert im.size[0] == 96 and im.size[1] > 64  # the legend below
        top = np.asarray(im.convert("RGB"))[:64]
    # outlines in the palette colour, 2 px inside each region (x 44–45 and 50–51); fills 0.6 photo + 0.4 colour:
    # red 0.6·255 + 0.4·128 = 204.2; the background (x 46–49) is the photo
    assert top[32, 45].tolist() == [128, 0, 0] and top[32, 50].tolist() == [0, 128, 0]
    assert top[32, 10].tolist() == [204, 0, 0] and top[32, 80].tolist() == [0, 204, 0]
    assert top[32, 47].tolist() == [255, 0, 0] and top[32, 48].tolist() == [0, 255, 0]


def test_candidates_decide_the_active_classes(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    cands = tmp_path / "c.jsonl"
    write_candidates(cands, [Candidates(str(image), {"red": 0.6, "green": 0.4}, ["red"], ["red"], 0.3, ["red"], "rg")])
    result = segment(runner, str(image), "--bank", str(bank), "--candidates", str(cands), "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    labels = read_label_map(tmp_path / "s" / "rg.png")
    # green inactive (−1): the right half is background (1/√2 against red's 0)
    assert (labels[:, :46] == 1).all() and (labels[:, 46:] == 0).all()
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other)
    line = one_line_error(segment(runner, str(other), "--bank", str(bank), "--candidates", str(cands),
                                  "-o", str(tmp_path / "t")))
    assert "c.jsonl" in line and "other.png" in line


def test_rerun_skips_and_other_settings_are_an_error(runner, colour_preset, bank: Path, image: Path,
                                                     tmp_path: Path) -> None:
    args = [str(image), "--bank", str(bank), "--no-prefilter", "-o", str(tmp_path / "s")]
    assert segment(runner, *args).exit_code == 0
    before = files_of(tmp_path / "s")
    result = segment(runner, *args)
    assert result.exit_code == 0 and result.stdout.split() == [str(tmp_path / "s" / "rg.png")]
    assert files_of(tmp_path / "s") == before
    line = one_line_error(segment(runner, *args, "--pamr"))
    assert "rg.png" in line and "--overwrite" in line
    assert segment(runner, *args, "--pamr", "--overwrite").exit_code == 0


def test_odd_images_are_converted_with_one_summed_note_and_shards_split_them(runner, colour_preset, bank: Path,
                                                                       tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((30, 50, 4), 90, np.uint8), "RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(deep)
    args = [str(gray), str(rgba), str(deep), "--bank", str(bank), "--no-prefilter", "-o", str(tmp_path / "s")]
    result = segment(runner, *args)
    assert result.exit_code == 0, result.output
    # three conversions, nothing to act on: one note with the count, not three warnings
    assert "warning" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "converted" in line]
    assert said == [f"ovdiff: note: 3 images were converted to 8-bit RGB (first: {gray}: grayscale: channel "
                    "replicated to RGB)"], result.stderr
    assert read_label_map(tmp_path / "s" / "gray.png").shape == (40, 30)
    result = segment(runner, *args[:3], *args[3:-1], str(tmp_path / "shard"), "--shard", "2/3")
    assert result.stdout.split() == [str(tmp_path / "shard" / "rgba.png")]
    assert f"ovdiff: note: {rgba}: RGBA: alpha dropped" in result.stderr.splitlines()  # one image: its own words


def _twin(image: Path) -> Path:
    """A copy of ``image`` in a subfolder: another image with the same output name."""
    twin = image.parent / "sub" / image.name
    twin.parent.mkdir()
    twin.write_bytes(image.read_bytes())
    return twin


COLOUR = ["--models", "colour", "--short-side", "64"]


# Each row: the arguments after ``segment`` (from the image, the bank folder and tmp_path) and the parts
# the one error line must hold.
@pytest.mark.parametrize("args, parts", [
    (lambda im, bank, tmp: [str(tmp / "none.png"), "--bank", str(bank), *COLOUR], ["none.png"]),
    (lambda im, bank, tmp: [str(im), "--bank", str(tmp), *COLOUR], ["bank", "ovdiff filter-stuff"]),
    (lambda im, bank, tmp: [str(im), str(_twin(im)), "--bank", str(bank), "--no-prefilter", *COLOUR], ["rg.png"]),
    # the tiny preset's DINO is not the extractor the bank was made with
    (lambda im, bank, tmp: [str(im), "--bank", str(bank), "--models", "tiny", "--no-prefilter"],
     ["other feature settings"]),
], ids=["missing-image", "folder-without-a-bank", "two-images-one-output-name", "bank-of-another-extractor"])
def test_bad_input(runner, colour_preset, bank: Path, image: Path, tmp_path: Path, args, parts: list[str]) -> None:
    line = one_line_error(runner.invoke(main, ["segment", *args(image, bank, tmp_path), "-o", str(tmp_path / "x")]))
    assert all(part in line for part in parts), line
    assert not (tmp_path / "x").exists()


def test_window_sizes_and_stride_are_options(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    result = segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "--crops", "32", "--stride", "32",
                     "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "s" / "rg.png") as im:
        assert json.loads(im.info["ovdiff"])["settings"]["crops"] == [[32, 32]]
    labels = read_label_map(tmp_path / "s" / "rg.png")
    assert (labels[:, :40] == 1).all() and (labels[:, 56:] == 2).all()
    assert segment(runner, str(image), "--bank", str(bank), "--crops", "a,b").exit_code == 2


def test_a_rerun_asking_for_side_files_makes_them(runner, colour_preset, bank: Path, image: Path,
                                                  tmp_path: Path) -> None:
    args = [str(image), "--bank", str(bank), "--no-prefilter", "-o", str(tmp_path / "s")]
    assert segment(runner, *args).exit_code == 0
    assert segment(runner, *args, "--explain", "--overlay").exit_code == 0
    assert (tmp_path / "s" / "rg.explain.safetensors").is_file() and (tmp_path / "s" / "rg.overlay.png").is_file()


def test_the_ensemble_averages_the_extractors(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    flat = write_rg_bank(tmp_path / "flat", "flat")
    result = segment(runner, str(image), "--bank", str(bank), "--bank", str(flat), "--no-prefilter",
                     "-o", str(tmp_path / "s"), "--explain")
    assert result.exit_code == 0, result.output
    labels = read_label_map(tmp_path / "s" / "rg.png")
    # right half: colour says green (1) and red (0), flat says red (1) and green (0): both 0.5, below the
    # background's 1/√2 from both → background. Left half: red 1 from both.
    assert (labels[:, :40] == 1).all() and (labels[:, 56:] == 0).all()
    e = read_explanation(tmp_path / "s" / "rg.explain.safetensors")
    assert sorted(e.rows) == ["dino", "flat"] and e.rows["flat"][0, 0] == 0


def test_a_bank_without_background_prototypes_thresholds_the_classes(runner, colour_preset, image: Path,
                                                                     tmp_path: Path) -> None:
    zero = write_rg_bank(tmp_path / "zero", bg_mode="zero")
    result = segment(runner, str(image), "--bank", str(zero), "--no-prefilter", "--bg-threshold", "0.9",
                     "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    labels = read_label_map(tmp_path / "s" / "rg.png")
    # red's weight (x + 0.5)/8 − 0.5 … must exceed 0.9: x ≤ 44; green's: x ≥ 51; between, background (0)
    expected = np.zeros(96, np.uint8)
    expected[:45] = 1
    expected[51:] = 2
    assert (labels == expected[None]).all()


def test_pamr_refines_the_saved_scores(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    from ovdiff_cli.core.segment import pamr

    args = [str(image), "--bank", str(bank), "--no-prefilter", "--save-scores"]
    assert segment(runner, *args, "-o", str(tmp_path / "plain")).exit_code == 0
    assert segment(runner, *args, "--pamr", "-o", str(tmp_path / "pamr")).exit_code == 0
    plain, _ = read_scores(tmp_path / "plain" / "rg.scores.safetensors")
    refined, _ = read_scores(tmp_path / "pamr" / "rg.scores.safetensors")
    rgb = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1).float()
    # no resize at short side 64, so the saved plain scores are S̄ and the refined ones PAMR(S̄)
    torch.testing.assert_close(refined, pamr(plain, rgb), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(refined, plain)


def test_keep_inactive_bg(runner, colour_preset, bank: Path, image: Path, tmp_path: Path) -> None:
    cands = tmp_path / "c.jsonl"
    write_candidates(cands, [Candidates(str(image), {"red": 0.4, "green": 0.6}, ["green"], ["green"], 0.3,
                                        ["green"], "rg")])
    args = [str(image), "--bank", str(bank), "--candidates", str(cands), "--save-scores"]
    assert segment(runner, *args, "-o", str(tmp_path / "a")).exit_code == 0
    assert segment(runner, *args, "--keep-inactive-bg", "-o", str(tmp_path / "b")).exit_code == 0
    a, _ = read_scores(tmp_path / "a" / "rg.scores.safetensors")
    b, _ = read_scores(tmp_path / "b" / "rg.scores.safetensors")
    # red is inactive: its background prototype leaves the background class (−1) unless kept (1/√2)
    assert a[0, 0, 0] == pytest.approx(-1.0) and b[0, 0, 0] == pytest.approx(S, abs=1e-5)
    assert a[1, 0, 0] == pytest.approx(-1.0)
