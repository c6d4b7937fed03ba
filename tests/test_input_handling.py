"""Input handling through the command line: EXIF orientation and verbatim paths in `segment`
(with the hand-made colour extractor of tests/helpers.py, so labels are known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.formats.images import EXIF_ORIENTATION
from ovdiff_cli.formats.labelmap import read_label_map
from tests.helpers import write_rg_bank


def segment(runner, *args: str, stdin: str | None = None):
    return runner.invoke(main, ["segment", *args, "--models", "colour", "--short-side", "64", "--no-prefilter"],
                         input=stdin)


def test_segment_labels_an_exif_rotated_photo_as_it_is_shown(runner, colour_preset,
                                                             tmp_path: Path) -> None:
    """Stored 320 wide × 240 high, red left and green right, EXIF orientation 6 (turn 90° clockwise):
    shown 240 wide × 320 high, red on top and green below, and so is the label map."""
    stored = np.zeros((240, 320, 3), np.uint8)
    stored[:, :160, 0] = 255
    stored[:, 160:, 1] = 255
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(photo, quality=95, exif=exif.tobytes())
    bank = write_rg_bank(tmp_path / "banks")
    result = segment(runner, str(photo), "--bank", str(bank), "-o", str(tmp_path / "seg"))
    assert result.exit_code == 0, result.output
    labels = read_label_map(tmp_path / "seg" / "phone.png")
    assert labels.shape == (320, 240)
    # red (label 1) wins well inside the top half, green (2) well inside the bottom half; in the middle
    # band both fall below the background prototype (see test_labels_by_hand)
    assert (labels[:140] == 1).all() and (labels[180:] == 2).all()


def test_segment_finds_a_file_whose_name_starts_with_a_space(runner, colour_preset, tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48, 0] = 255
    Image.fromarray(rgb).save(tmp_path / " lead.png")
    Image.fromarray(rgb).save(tmp_path / "tail .png")
    bank = write_rg_bank(tmp_path / "banks")
    result = segment(runner, " lead.png", "--bank", str(bank), "-o", "seg")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(Path("seg") / " lead.png")]
    assert (read_label_map(tmp_path / "seg" / " lead.png")[:, :40] == 1).all()
    result = segment(runner, "-", "--bank", str(bank), "-o", "seg2", stdin="tail .png\r\n\n lead.png\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(Path("seg2") / "tail .png"), str(Path("seg2") / " lead.png")]
    # and a name that differs only by the space is not that file
    result = segment(runner, "lead.png", "--bank", str(bank), "-o", "seg3")
    assert result.exit_code == 1 and "lead.png" in result.stderr and not (tmp_path / "seg3").exists()
