"""`ovdiff segment` reruns, refusals and concurrent runs (docs/design.md §4.1, §4.2).

The hand-made colour extractor and red/green bank of tests/helpers.py make every label known: the
image ``rg.png`` (left half red, right half green) gives ``RG`` below, its mirror image the mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.candidates import Candidates, write_candidates
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, OVERLAY_SCHEMA, read_label_map
from tests.helpers import files_of, one_line_error, write_rg_bank
from tests.helpers import segment_by_colour as segment

ROOT = Path(__file__).resolve().parents[2]

# The labels of rg.png along x, worked out by hand in test_segment.test_labels_by_hand.
RG = np.zeros(96, np.uint8)
RG[:46] = 1
RG[50:] = 2


def rg_picture(mirrored: bool = False) -> np.ndarray:
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48, 0] = 255
    rgb[:, 48:, 1] = 255
    return rgb[:, ::-1].copy() if mirrored else rgb


def save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meta_of(path: Path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.info["ovdiff"])


# --- case 1: the image's content decides, not its name ---------------------------------------------------------


def test_another_image_of_the_same_name_is_segmented_again(runner, colour_preset, bank: Path,
                                                           tmp_path: Path) -> None:
    first = save(tmp_path / "d1" / "photo.png", rg_picture())
    second = save(tmp_path / "d2" / "photo.png", rg_picture(mirrored=True))
    out = tmp_path / "seg"
    assert segment(runner, str(first), "--bank", str(bank), "--no-prefilter", "-o", str(out)).exit_code == 0
    assert (read_label_map(out / "photo.png") == RG[None]).all()
    result = segment(runner, str(second), "--bank", str(bank), "--no-prefilter", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "photo.png")]
    # the mirror image's labels are the mirror of rg's (the 12 feature cells are symmetric about the middle)
    assert (read_label_map(out / "photo.png") == RG[::-1][None]).all()
    meta = meta_of(out / "photo.png")
    assert meta["inputs"]["image_sha256"] == sha256(second) and meta["image"] == str(second)


def test_an_image_edited_in_place_is_segmented_again(runner, colour_preset, bank: Path,
                                                     tmp_path: Path) -> None:
    photo = save(tmp_path / "photo.png", rg_picture())
    out = tmp_path / "seg"
    args = [str(photo), "--bank", str(bank), "--no-prefilter", "-o", str(out), "--overlay"]
    assert segment(runner, *args).exit_code == 0
    before = files_of(out)
    assert segment(runner, *args).exit_code == 0 and files_of(out) == before  # same content: reused
    save(photo, rg_picture(mirrored=True))
    assert segment(runner, *args).exit_code == 0
    assert (read_label_map(out / "photo.png") == RG[::-1][None]).all()
    for name in ("photo.png", "photo.overlay.png"):
        assert meta_of(out / name)["inputs"]["image_sha256"] == sha256(photo)


def test_a_stale_side_file_not_asked_for_is_removed(runner, colour_preset, bank: Path,
                                                    tmp_path: Path) -> None:
    photo = save(tmp_path / "photo.png", rg_picture())
    out = tmp_path / "seg"
    args = [str(photo), "--bank", str(bank), "--no-prefilter", "-o", str(out)]
    assert segment(runner, *args, "--overlay").exit_code == 0
    save(photo, rg_picture(mirrored=True))
    assert segment(runner, *args).exit_code == 0
    # the overlay showed the old picture beside the new label map: it goes with the map it belonged to
    assert sorted(p.name for p in out.iterdir()) == ["photo.png"]


def test_other_banks_with_the_same_paths_are_inputs_that_changed(runner, colour_preset, bank: Path,
                                                                 image: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    args = [str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out)]
    assert segment(runner, *args).exit_code == 0
    before = sha256(bank / "bank.dino.safetensors")
    write_rg_bank(bank, bg_mode="zero")  # same path, other content: no background prototypes
    assert sha256(bank / "bank.dino.safetensors") != before
    assert segment(runner, *args).exit_code == 0
    meta = meta_of(out / "rg.png")
    assert meta["inputs"]["banks"] == {"dino": sha256(bank / "bank.dino.safetensors")}
    assert "file" not in json.dumps(meta["inputs"])  # no path in the identity
    # zero mode at --bg-threshold 0.75: red while its weight exceeds 0.75 (x <= 45), green from x = 50
    labels = read_label_map(out / "rg.png")
    assert (labels[:, :45] == 1).all() and (labels[:, 51:] == 2).all()


# --- case 2: inputs are never outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_segmenting_photos_into_their_own_folder_is_refused(runner, colour_preset, bank: Path,
                                                            tmp_path: Path, overwrite: bool) -> None:
    photos = tmp_path / "photos"
    a, b = save(photos / "a.png", rg_picture()), save(photos / "b.png", rg_picture(mirrored=True))
    before = files_of(photos)
    line = one_line_error(segment(runner, str(a), str(b), "--bank", str(bank), "--no-prefilter", "-o", str(photos),
                                  *(["--overwrite"] if overwrite else [])))
    assert line.startswith(f"ovdiff: error: {a}: is an input of this run") and "not even with --overwrite" in line
    assert files_of(photos) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_label_maps_given_as_images_are_not_replaced_by_their_own_label_maps(runner, colour_preset,
                                                                            bank: Path, image: Path,
                                                                            tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "seg"
    assert segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out)).exit_code == 0
    before = files_of(out)
    # out/rg.png is an ovdiff label map, so only the explicit check stands between it and its own output
    line = one_line_error(segment(runner, str(out / "rg.png"), "--bank", str(bank), "--no-prefilter",
                                  "-o", str(out), *(["--overwrite"] if overwrite else [])))
    assert f"{out / 'rg.png'}: is an input of this run, an image" in line
    assert files_of(out) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_file_where_an_output_goes_is_never_replaced(runner, colour_preset, bank: Path,
                                                             image: Path, tmp_path: Path,
                                                             overwrite: bool) -> None:
    out = tmp_path / "seg"
    save(out / "rg.png", rg_picture(mirrored=True))  # a photo of the user's, not an input this time
    (out / "rg.scores.safetensors").write_bytes(b"the user's notes")
    before = files_of(out)
    for extra, name in (([], "rg.png"), (["--save-scores"], "rg.png")):
        line = one_line_error(segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out),
                                      *extra, *(["--overwrite"] if overwrite else [])))
        assert f"{out / name}: exists and was not written by ovdiff" in line
    (out / "rg.png").unlink()
    line = one_line_error(segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out),
                                  "--save-scores", *(["--overwrite"] if overwrite else [])))
    assert f"{out / 'rg.scores.safetensors'}: exists and was not written by ovdiff" in line
    assert files_of(out) == {"rg.scores.safetensors": before["rg.scores.safetensors"]}  # nothing else written


# --- case 12: side files never collide with outputs; label maps and overlays say what they are ---------------------


def test_an_image_named_like_anothers_overlay_is_refused_up_front(runner, colour_preset,
                                                                  bank: Path, tmp_path: Path) -> None:
    a = save(tmp_path / "in" / "a.png", rg_picture())
    a_overlay = save(tmp_path / "in" / "a.overlay.png", rg_picture(mirrored=True))
    out = tmp_path / "seg"
    line = one_line_error(segment(runner, str(a), str(a_overlay), "--bank", str(bank), "--no-prefilter",
                                  "-o", str(out), "--overlay"))
    assert line == (f"ovdiff: error: {out / 'a.overlay.png'} would be both the overlay of {a} and the label map of "
                    f"{a_overlay}; segment images whose names clash into different -o folders, or rename one")
    assert not out.exists()
    # without overlays there is no clash: two label maps, each recognisable by its metadata
    result = segment(runner, str(a), str(a_overlay), "--bank", str(bank), "--no-prefilter", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "a.png"), str(out / "a.overlay.png")]
    assert (read_label_map(out / "a.png") == RG[None]).all()
    assert (read_label_map(out / "a.overlay.png") == RG[::-1][None]).all()
    for name in ("a.png", "a.overlay.png"):
        assert provenance.ovdiff_schema(out / name)[0] == LABELMAP_SCHEMA


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_label_map_where_an_overlay_goes_is_refused(runner, colour_preset, bank: Path,
                                                      tmp_path: Path, overwrite: bool) -> None:
    a = save(tmp_path / "in" / "a.png", rg_picture())
    a_overlay = save(tmp_path / "other" / "a.overlay.png", rg_picture(mirrored=True))
    out = tmp_path / "seg"
    assert segment(runner, str(a_overlay), "--bank", str(bank), "--no-prefilter", "-o", str(out)).exit_code == 0
    before = files_of(out)
    line = one_line_error(segment(runner, str(a), "--bank", str(bank), "--no-prefilter", "-o", str(out),
                                  "--overlay", *(["--overwrite"] if overwrite else [])))
    assert (f"{out / 'a.overlay.png'}: is an ovdiff {LABELMAP_SCHEMA} file where an {OVERLAY_SCHEMA} file would go"
            in line)
    assert files_of(out) == before  # neither a.png nor its overlay written


def test_label_maps_and_overlays_carry_their_schema(runner, colour_preset, bank: Path, image: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = segment(runner, str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out), "--overlay",
                     "--save-scores", "--explain")
    assert result.exit_code == 0, result.output
    digest = sha256(image)
    found = {name: provenance.ovdiff_schema(out / name) for name in
             ("rg.png", "rg.overlay.png", "rg.scores.safetensors", "rg.explain.safetensors")}
    assert {name: schema for name, (schema, _) in found.items()} == {
        "rg.png": "ovdiff.labelmap/1", "rg.overlay.png": "ovdiff.overlay/1",
        "rg.scores.safetensors": "ovdiff.scores/1", "rg.explain.safetensors": "ovdiff.explain/1"}
    for _, meta in found.values():  # one identity for the map and its side files
        assert meta["inputs"] == {"image_sha256": digest, "banks": {"dino": sha256(bank / "bank.dino.safetensors")}}
        assert meta["prefilter"] is False and meta["models"] == {"extractors": {"dino": "colour"}, "scorer": None}


# --- candidates: the active classes are inputs, and a stale record is refused ---------------------------------------


def test_candidates_are_inputs_of_the_label_map(runner, colour_preset, bank: Path, image: Path,
                                                tmp_path: Path) -> None:
    cands = tmp_path / "c.jsonl"
    out = tmp_path / "seg"
    args = [str(image), "--bank", str(bank), "--candidates", str(cands), "-o", str(out)]
    write_candidates(cands, [Candidates(str(image), {}, [], [], 0.0, ["red"], "rg")])
    assert segment(runner, *args).exit_code == 0
    assert (read_label_map(out / "rg.png")[:, 46:] == 0).all()  # green inactive: background
    write_candidates(cands, [Candidates(str(image), {}, [], [], 0.0, ["red", "green"], "rg")])
    assert segment(runner, *args).exit_code == 0
    assert (read_label_map(out / "rg.png") == RG[None]).all()
    assert meta_of(out / "rg.png")["inputs"]["active"] == ["red", "green"]
    # a record made from another version of the image is refused, naming both
    write_candidates(cands, [Candidates(str(image), {}, [], [], 0.0, ["red"], "rg",
                                        {"inputs": {"image_sha256": "0" * 64}})])
    line = one_line_error(segment(runner, *args))
    assert f"{cands}: was made from another version of {image}" in line and "ovdiff classify" in line


# --- case 4: two processes, one output folder -----------------------------------------------------------------------

# The colour extractor of tests/helpers.py in a real `ovdiff` process. Its first call touches $MARK, then
# waits for $GO (when set), so the test knows the process holds its image's lock and can keep it there.
CHILD = r"""
import os, sys, time
from pathlib import Path
import torch
from ovdiff_cli.models import registry

class Colour:
    name = "dino"
    dim = 2

    def settings(self):
        return {"extractor": "dino", "model": "colour"}

    def window_input(self, window):
        return window  # sees a test window as it is

    def features(self, images):
        Path(os.environ["MARK"]).touch()
        go = os.environ.get("GO")
        start = time.monotonic()
        while go and not Path(go).exists() and time.monotonic() - start < 120:
            time.sleep(0.05)
        return torch.nn.functional.avg_pool2d(images[:, :2].float(), 8)

comp = registry.Component("colour", "block colours for tests", lambda f, d, t: Colour(), tiny=True)
registry.register_preset(registry.Preset("colour", "tests", {"extractor.dino": comp}, tiny=True))
from ovdiff_cli.cli import main
sys.argv[0] = "ovdiff"
main()
"""


def start(tmp_path: Path, name: str, args: list[str], go: bool) -> subprocess.Popen:
    env = {**os.environ, "MARK": str(tmp_path / f"{name}.mark"), "GO": str(tmp_path / "go") if go else ""}
    env.pop("OVDIFF_LOCK_TIMEOUT", None)
    return subprocess.Popen([sys.executable, "-c", CHILD, "segment", *args, "--models", "colour",
                             "--short-side", "64"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_run_with_other_settings_waits_then_refuses(tmp_path: Path, bank: Path, image: Path) -> None:
    out = tmp_path / "seg"
    args = [str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out)]
    first = start(tmp_path, "first", args, go=True)
    try:
        wait_for(tmp_path / "first.mark", first)  # the first holds rg.png's lock and computes
        second = start(tmp_path, "second", [*args, "--pamr"], go=False)
        assert second.stderr is not None
        note = second.stderr.readline()  # it waits for the first: nothing of its own is computed yet
        assert f"{out / 'rg.png'} is being written by process {first.pid}" in note
        (tmp_path / "go").touch()
        assert finish(first)[:2] == (0, f"{out / 'rg.png'}\n")
        code, stdout, err = finish(second)
    finally:
        first.kill()
    assert (code, stdout) == (1, "")
    assert err.splitlines() == [f"ovdiff: error: {out / 'rg.png'}: was made with other settings.pamr; pass --overwrite "
                                "to replace it, or choose another -o"]
    assert not (tmp_path / "second.mark").exists()
    assert meta_of(out / "rg.png")["settings"]["pamr"] is False
    assert (read_label_map(out / "rg.png") == RG[None]).all()
    assert sorted(p.name for p in out.iterdir()) == ["rg.png"]  # no lock file left


def test_an_identical_run_waits_then_reuses(tmp_path: Path, bank: Path, image: Path) -> None:
    out = tmp_path / "seg"
    args = [str(image), "--bank", str(bank), "--no-prefilter", "-o", str(out)]
    first = start(tmp_path, "first", args, go=True)
    try:
        wait_for(tmp_path / "first.mark", first)
        second = start(tmp_path, "second", args, go=False)
        assert second.stderr is not None and "is being written by process" in second.stderr.readline()
        (tmp_path / "go").touch()
        assert finish(first)[0] == 0
        assert finish(second)[:2] == (0, f"{out / 'rg.png'}\n")
    finally:
        first.kill()
    assert not (tmp_path / "second.mark").exists()  # the second computed nothing
    assert (read_label_map(out / "rg.png") == RG[None]).all()


def test_shards_into_one_folder_run_side_by_side(tmp_path: Path, bank: Path) -> None:
    a = save(tmp_path / "in" / "a.png", rg_picture())
    b = save(tmp_path / "in" / "b.png", rg_picture(mirrored=True))
    out = tmp_path / "seg"
    args = [str(a), str(b), "--bank", str(bank), "--no-prefilter", "-o", str(out)]
    first = start(tmp_path, "first", [*args, "--shard", "1/2"], go=True)
    try:
        wait_for(tmp_path / "first.mark", first)  # shard 1 holds a.png's lock and waits
        # shard 2 finishes while shard 1 still holds its lock: the locks are per image, not per folder
        assert finish(start(tmp_path, "second", [*args, "--shard", "2/2"], go=False))[:2] == (0, f"{out / 'b.png'}\n")
        assert first.poll() is None
        (tmp_path / "go").touch()
        assert finish(first)[:2] == (0, f"{out / 'a.png'}\n")
    finally:
        first.kill()
    assert (read_label_map(out / "a.png") == RG[None]).all()
    assert (read_label_map(out / "b.png") == RG[::-1][None]).all()
