"""The support-set stages under the one reuse rule (docs/design.md §4.1): a user's own photos are never
replaced or deleted (case 3), concurrent `sample` runs never mix (case 4, real subprocesses),
long class names stay writable through the chain (case 10), support sets from the user's own
images (case 14), and provenance of attributions, masks and overlays."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.core.attention import CrossAttention
from ovdiff_cli.core.settings import AttributeSettings
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats.provenance import ovdiff_schema
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.formats.vocabulary import slugify
from ovdiff_cli.models import registry
from ovdiff_cli.stages.attribute import attribute
from tests.helpers import attribution_by_hand, files_of, one_line_error

TINY = ["--models", "tiny"]
SMALL = ["-n", "2", "--batch-size", "2", "--steps", "1", *TINY]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("no model may load before the folder is checked")

    monkeypatch.setattr(registry, "load", refuse)


# -- case 3: a folder of the user's own photos -------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_sample_refuses_a_folder_of_the_users_photos_and_deletes_nothing(runner, tmp_path: Path, monkeypatch,
                                                                         overwrite: list[str]) -> None:
    images = tmp_path / "ws" / "mug" / "images"
    images.mkdir(parents=True)
    # a photo named as ovdiff names its images, but without ovdiff's metadata, and one of any name
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(images / "00000.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(images / "photo.jpg")
    before = files_of(tmp_path / "ws")
    no_models(monkeypatch)
    for args in (["sample", "mug", *SMALL], ["sample", "mug", "--from-images", str(images / "photo.jpg"), *TINY]):
        line = one_line_error(runner.invoke(main, [*args, *overwrite, "-o", str(tmp_path / "ws")]))
        assert "was not written by ovdiff" in line and str(images) in line and "move the file away" in line
        assert files_of(tmp_path / "ws") == before


def test_overwrite_of_a_set_holding_one_photo_of_the_users_deletes_nothing(runner, tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert runner.invoke(main, ["sample", "mug", *SMALL, "-o", str(out)]).exit_code == 0
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "mug" / "images" / "mine.png")
    before = files_of(out)
    line = one_line_error(runner.invoke(main, ["sample", "mug", *SMALL, "--seed", "7", "--overwrite", "-o", str(out)]))
    assert "mine.png" in line and "not written by ovdiff" in line
    assert files_of(out) == before  # the ovdiff images are not deleted either: refused before anything


def test_clear_checks_every_file_before_deleting_any(tmp_path: Path) -> None:
    s = SupportSet(tmp_path / "cat")
    for i in range(2):
        s.write_image(i, np.full((4, 4, 3), i, np.uint8), {"class": "cat"})
    s.write_mask(0, np.ones((4, 4), np.uint8), {"mode": "hand"})
    s.masks_dir.joinpath("00001.png").write_bytes(b"the user's notes")  # not ovdiff's, and last to be listed
    before = files_of(s.path)
    with pytest.raises(BadFile, match="00001.png: exists and was not written by ovdiff"):
        s.clear()
    assert files_of(s.path) == before
    s.masks_dir.joinpath("00001.png").unlink()
    s.clear()
    assert tree(s.path) == []


def test_sampled_images_record_their_schema_source_and_empty_inputs(runner, tmp_path: Path) -> None:
    assert runner.invoke(main, ["sample", "cat", *SMALL, "-o", str(tmp_path)]).exit_code == 0
    schema, meta = ovdiff_schema(tmp_path / "cat" / "images" / "00001.png")
    assert schema == "ovdiff.support-image/1"
    assert (meta["source"], meta["inputs"], meta["index"], meta["models"]["preset"]) == ("sd", {}, 1, "tiny")
    assert ovdiff_schema(tmp_path / "cat" / "crossattn.safetensors")[1]["inputs"] == {}


# -- case 4: two `sample` processes at once -------------------------------------------------------

#: `ovdiff` with the generator held before its first batch until the file $OVDIFF_TEST_GATE exists:
#: it holds the class folder's lock meanwhile, so a second process certainly meets it.
GATED = r"""
import os, sys, time
from pathlib import Path
from ovdiff_cli.models.generator import DiffusersGenerator
real = DiffusersGenerator.generate
def gated(self, *a, **k):
    while not Path(os.environ["OVDIFF_TEST_GATE"]).exists():
        time.sleep(0.05)
    return real(self, *a, **k)
DiffusersGenerator.generate = gated
sys.argv[0] = "ovdiff"
from ovdiff_cli.cli import main
main()
"""

RACE = ["-n", "4", "--batch-size", "2", "--steps", "1", *TINY]


@pytest.fixture(scope="module")
def lone_seed_1(tmp_path_factory) -> Path:
    """The set a lone `sample cat --seed 1` draws, for comparison with the racing runs."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("lone")
    result = CliRunner().invoke(main, ["sample", "cat", *RACE, "--seed", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out / "cat"


def wait_for(condition, what: str, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def race(tmp_path: Path, seed_b: int) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess, Path]:
    """Run `sample cat --seed 1` (A) and `sample cat --seed seed_b` (B) into one -o, B certainly
    starting while A holds the folder and has drawn nothing; return both results and -o."""
    out, gate = tmp_path / "ws", tmp_path / "gate"
    env = {**os.environ, "OVDIFF_TEST_GATE": str(gate)}
    logs = {k: (tmp_path / f"{k}.out", tmp_path / f"{k}.err") for k in "ab"}
    cmd = ["sample", "cat", *RACE, "-o", str(out)]
    procs = {}
    with open(logs["a"][0], "w") as o, open(logs["a"][1], "w") as e:
        procs["a"] = subprocess.Popen([sys.executable, "-c", GATED, *cmd, "--seed", "1"], stdout=o, stderr=e, env=env)
    try:
        wait_for(lambda: (out / ".cat.lock").exists() or procs["a"].poll() is not None, "A to lock the folder")
        assert procs["a"].poll() is None, logs["a"][1].read_text()
        with open(logs["b"][0], "w") as o, open(logs["b"][1], "w") as e:
            procs["b"] = subprocess.Popen([sys.executable, "-m", "ovdiff_cli", *cmd, "--seed", str(seed_b)],
                                          stdout=o, stderr=e, env=env)
        wait_for(lambda: "waiting for it" in logs["b"][1].read_text() or procs["b"].poll() is not None,
                 "B to wait for A's lock")
        assert not SupportSet(out / "cat").image_indices()  # A has drawn nothing yet
        gate.touch()
        for p in procs.values():
            p.wait(timeout=300)
    finally:
        gate.touch()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    done = {k: subprocess.CompletedProcess(p.args, p.returncode, logs[k][0].read_text(), logs[k][1].read_text())
            for k, p in procs.items()}
    return done["a"], done["b"], out


def test_two_seeds_at_once_one_draws_the_other_refuses(tmp_path: Path, lone_seed_1: Path) -> None:
    a, b, out = race(tmp_path, seed_b=2)
    assert a.returncode == 0, a.stderr
    assert a.stdout.split() == [str(out / "cat")]
    assert b.returncode == 1 and b.stdout == ""
    errors = [line for line in b.stderr.splitlines() if not line.startswith("ovdiff: note:")]
    assert len(errors) == 1 and errors[0].startswith("ovdiff: error: ") and "other seed" in errors[0], b.stderr
    assert "--overwrite" in errors[0] and "Traceback" not in b.stderr
    assert files_of(out / "cat") == files_of(lone_seed_1)  # seed 1's set, nothing of seed 2's
    assert tree(out) == ["cat", *[f"cat/{f}" for f in tree(lone_seed_1)]]


def test_two_identical_runs_at_once_both_succeed_with_one_set(tmp_path: Path, lone_seed_1: Path) -> None:
    a, b, out = race(tmp_path, seed_b=1)
    assert (a.returncode, b.returncode) == (0, 0), a.stderr + b.stderr
    assert a.stdout.split() == b.stdout.split() == [str(out / "cat")]
    assert "complete, skipped" in b.stderr  # B reused what A drew
    assert files_of(out / "cat") == files_of(lone_seed_1)
    # no lock, partial batch or temporary file left anywhere
    assert tree(out) == ["cat", "cat/crossattn.safetensors", "cat/images",
                         *[f"cat/images/{i:05d}.png" for i in range(4)]]


# -- case 10: class names of 20-26 words ----------------------------------------------------------

def test_a_class_of_24_words_goes_through_sample_attribute_mask_prototype(runner, tmp_path: Path) -> None:
    words = ("small red wooden toy car with four black wheels".split() * 3)[:24]
    name = " ".join(words)
    # the readable prefix (49 bytes) ends in "…wheels-s", so it is cut back to the last whole word;
    # then "-" and 10 hex digits of the digest of the whole slug
    digest = hashlib.sha256("-".join(words).encode()).hexdigest()[:10]
    slug = f"small-red-wooden-toy-car-with-four-black-wheels-{digest}"
    assert slugify(name) == slug and len(slug) == 58

    sampled = runner.invoke(main, ["sample", name, *SMALL, "-o", str(tmp_path / "ws")])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.split() == [str(tmp_path / "ws" / slug)]
    for cmd in (["attribute", str(tmp_path / "ws" / slug)],
                ["mask", str(tmp_path / "ws" / slug), "--proposer", "threshold"]):
        result = runner.invoke(main, cmd)
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["prototype", str(tmp_path / "ws" / slug), "-x", "dino", "--clusters", "2", *TINY,
                                  "-o", str(tmp_path / "protos")])
    assert result.exit_code == 0, result.output
    proto = tmp_path / "protos" / f"{slug}.dino.safetensors"
    assert result.stdout.split() == [str(proto)]
    assert ovdiff_schema(proto)[1]["class"] == name  # the full name stays in the metadata


# -- case 14: support sets from the user's own images ---------------------------------------------

@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Three images of other sizes, formats and modes (names with a space and no 00000 pattern)."""
    rng = np.random.default_rng(3)
    d = tmp_path / "my photos"
    d.mkdir()
    made = [d / "mug one.jpg", d / "mug-2.png", d / "IMG_77.png"]
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(made[0], quality=95)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(made[1])
    Image.fromarray(rng.integers(0, 255, (300, 90, 4), dtype=np.uint8), mode="RGBA").save(made[2])
    return made


def expected_squash(path: Path, size: int = 128) -> np.ndarray:
    """docs/method.md §7.1 by PIL's own conversions (grey replicated, alpha dropped), squashed with LANCZOS."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def test_from_images_builds_a_set_that_attribute_mask_prototype_take_unchanged(runner, tmp_path: Path,
                                                                                photos: list[Path]) -> None:
    out = tmp_path / "ws"
    result = runner.invoke(main, ["sample", "red mug", "--from-images", *map(str, photos), *TINY, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "red-mug")]
    s = SupportSet(out / "red-mug")
    assert s.image_indices() == [0, 1, 2] and not s.crossattn_path.exists()
    for i, photo in enumerate(photos):
        schema, meta = ovdiff_schema(s.image_path(i))
        assert schema == "ovdiff.support-image/1"
        assert (meta["source"], meta["class"], meta["phrase"], meta["size"]) == ("images", "red mug", "red mug", 128)
        assert (meta["source_name"], meta["source_sha256"], meta["index"]) == (photo.name, sha(photo), i)
        assert meta["sources"] == [sha(p) for p in photos] and meta["inputs"] == {}
        assert (s.read_image(i)[0] == expected_squash(photo)).all()

    line = one_line_error(runner.invoke(main, ["attribute", str(s.path)]))
    assert "--renoise" in line
    for cmd in (["attribute", str(s.path), "--renoise", *TINY], ["mask", str(s.path), "--proposer", "threshold"],
                ["prototype", str(s.path), "-x", "dino", "--clusters", "2", *TINY, "-o", str(tmp_path / "p")]):
        result = runner.invoke(main, cmd)
        assert result.exit_code == 0, result.output
    att = s.read_attribution()
    assert att.meta["class"] == "red mug" and att.meta["prompt"] == "A good picture of a red mug"
    assert att.meta["inputs"] == {f"{i:05d}.png": sha(s.image_path(i)) for i in range(3)}
    assert att.meta["models"]["preset"] == "tiny"
    assert s.read_mask(2)[0].shape == (128, 128)  # at the attribution's resolution
    assert (tmp_path / "p" / "red-mug.dino.safetensors").is_file()


def test_from_images_reruns_reuse_the_same_photos_and_refuse_others(runner, tmp_path: Path,
                                                                     photos: list[Path]) -> None:
    out = tmp_path / "ws"
    args = ["sample", "red mug", "--from-images", *map(str, photos), *TINY, "-o", str(out)]
    assert runner.invoke(main, args).exit_code == 0
    before = files_of(out)
    # the same photos under other paths: the same content, so the set is reused
    copies = [tmp_path / f"copy{i}{p.suffix}" for i, p in enumerate(photos)]
    for p, c in zip(photos, copies):
        shutil.copy(p, c)
    result = runner.invoke(main, ["sample", "red mug", "--from-images", *map(str, copies), *TINY, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "complete, skipped" in result.stderr and files_of(out) == before

    # other photos (one edited in place) into the same folder: an error, nothing changed
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(photos[1])
    line = one_line_error(runner.invoke(main, args))
    assert str(out / "red-mug") in line and "other sources" in line and "--overwrite" in line
    assert files_of(out) == before
    result = runner.invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (SupportSet(out / "red-mug").read_image(1)[0] == 0).all()

    # a drawn set over it is refused too (another source), and the other way round
    line = one_line_error(runner.invoke(main, ["sample", "red mug", *SMALL, "-o", str(out)]))
    assert "other source" in line


@pytest.mark.parametrize("args, expected", [
    (["sample", "mug", "--from-images"], "CLASS and at least one image"),
    (["sample", "--vocab", "cat,dog", "--from-images", "a.png"], "not --vocab"),
    (["sample", "mug", "--from-images", "a.png", "--steps", "3"], "--steps"),
    (["sample", "mug", "--from-images", "a.png", "--seed", "3"], "--seed"),
])
def test_from_images_usage_errors(runner, tmp_path: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "ws")])
    assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not (tmp_path / "ws").exists()


def _broken_png(tmp_path: Path) -> Path:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return broken


@pytest.mark.parametrize("make_bad", [lambda tmp: tmp / "none.jpg", _broken_png], ids=["missing", "broken"])
def test_from_images_with_a_missing_or_broken_photo_is_one_line_and_writes_nothing(runner, tmp_path: Path,
                                                                                    photos: list[Path],
                                                                                    make_bad) -> None:
    bad = make_bad(tmp_path)
    line = one_line_error(runner.invoke(main, ["sample", "mug", "--from-images", str(photos[0]), str(bad), *TINY,
                                               "-o", str(tmp_path / "ws")]))
    assert str(bad) in line
    assert not (tmp_path / "ws").exists()


# -- attribute: inputs by content, models in the settings -----------------------------------------

def synthetic_set(folder: Path, seed: int) -> SupportSet:
    """Two 16² images and a recording of 2 layers × 2 tokens on a 4² grid, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    s = SupportSet(folder)
    for i in range(2):
        s.write_image(i, np.full((16, 16, 3), 10 * i, np.uint8), {"class": "cat"})
    models = {"preset": "hand", "tiny": True, "components": {}}
    s.write_crossattn(CrossAttention(torch.rand(2, 2, 2, 4, 4, generator=g), torch.full((2, 2), 3),
                                     torch.tensor([5, 6]), torch.tensor([6]), ("a</w>", "cat</w>"), ("l0", "l1"),
                                     {"class": "cat", "prompt": "a cat", "models": models}))
    return s


def test_a_resampled_recording_makes_the_attribution_stale_and_other_settings_refuse(runner, tmp_path: Path) -> None:
    s = synthetic_set(tmp_path / "cat", seed=0)
    args = ["attribute", str(s.path), "--attn-layers", "0,1"]
    assert runner.invoke(main, args).exit_code == 0
    assert s.read_attribution().meta["inputs"] == {"crossattn.safetensors": sha(s.crossattn_path)}
    synthetic_set(s.path, seed=1)  # the set resampled with the same settings
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    _, a = attribution_by_hand(s.read_crossattn(), [1], [0, 1], 16)
    assert np.allclose(s.read_attribution().maps.numpy(), a, atol=1e-5)
    assert s.read_attribution().meta["inputs"] == {"crossattn.safetensors": sha(s.crossattn_path)}
    line = one_line_error(runner.invoke(main, ["attribute", str(s.path), "--attn-layers", "1"]))
    assert "other settings" in line and "--overwrite" in line


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_attribute_never_replaces_a_file_it_did_not_write(runner, tmp_path: Path, overwrite: list[str]) -> None:
    s = synthetic_set(tmp_path / "cat", seed=0)
    s.attribution_path.write_bytes(b"my own file")
    line = one_line_error(runner.invoke(main, ["attribute", str(s.path), "--attn-layers", "0,1", *overwrite]))
    assert "attribution.safetensors" in line and "not written by ovdiff" in line
    assert s.attribution_path.read_bytes() == b"my own file"


# -- mask: foreign masks and overlays, overlay provenance ------------------------------------------

def threshold_set(folder: Path) -> SupportSet:
    """A synthetic set with its attribution, ready for `mask --proposer threshold`."""
    s = synthetic_set(folder, seed=0)
    attribute([s.path], settings=AttributeSettings(layers=(0, 1)))
    return s


@pytest.mark.parametrize("where", ["masks", "overlays"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_mask_never_replaces_a_file_it_did_not_write(runner, tmp_path: Path, where: str,
                                                     overwrite: list[str]) -> None:
    s = threshold_set(tmp_path / "cat")
    (s.path / where).mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(s.path / where / "00000.png")
    before = files_of(s.path)
    line = one_line_error(runner.invoke(main, ["mask", str(s.path), "--proposer", "threshold", "--overlay",
                                               *overwrite]))
    assert f"{where}/00000.png" in line and "not written by ovdiff" in line
    if where == "masks":
        assert files_of(s.path) == before  # refused before any mask was written
    assert (s.path / where / "00000.png").read_bytes() == before[f"{where}/00000.png"]


def test_overlays_carry_a_schema_and_are_remade_only_when_their_mask_changes(runner, tmp_path: Path) -> None:
    s = threshold_set(tmp_path / "cat")
    args = ["mask", str(s.path), "--proposer", "threshold", "--overlay"]
    assert runner.invoke(main, args).exit_code == 0
    schema, meta = ovdiff_schema(s.overlay_path(1))
    assert schema == "ovdiff.mask-overlay/1"
    assert meta["inputs"] == {"mask": sha(s.mask_path(1)), "image": sha(s.image_path(1))}
    mask_meta = s.read_mask(1)[1]
    assert mask_meta["inputs"] == {"attribution": sha(s.attribution_path), "image": sha(s.image_path(1))}
    assert (mask_meta["proposer"], mask_meta["models"]) == ("threshold", {})
    stamps = [s.overlay_path(i).stat().st_mtime_ns for i in range(2)]
    time.sleep(0.01)
    assert runner.invoke(main, args).exit_code == 0
    assert [s.overlay_path(i).stat().st_mtime_ns for i in range(2)] == stamps  # reused, not rewritten
    result = runner.invoke(main, [*args, "--fallback-bg", "0.1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert ovdiff_schema(s.overlay_path(1))[1]["inputs"]["mask"] == sha(s.mask_path(1))


def test_from_images_applies_the_exif_orientation(runner, tmp_path: Path) -> None:
    # stored 40 wide × 20 high, left half red, right half blue; orientation 6 = shown turned 90°
    # clockwise, so a viewer shows it 20 × 40 with red on top and blue below
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    photo = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(photo, exif=exif, quality=100)
    result = runner.invoke(main, ["sample", "flag", "--from-images", str(photo), *TINY, "-o", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    rgb = SupportSet(tmp_path / "ws" / "flag").read_image(0)[0].astype(int)
    top, bottom = rgb[:48].mean(axis=(0, 1)), rgb[80:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
