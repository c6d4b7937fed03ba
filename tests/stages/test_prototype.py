"""`ovdiff prototype` through the command line: a hand-made support set and a registered
hand-made extractor (prototypes worked out by hand), the tiny preset end to end, resume and errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.formats.prototypes import read_prototypes
from ovdiff_cli.core.attention import Attribution
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.models import registry
from tests.helpers import HandFeatures, files_of, hold_lock, one_line_error

META = {"class": "cat", "models": {"preset": "test", "tiny": True, "components": {}}, "inputs": {}}


def hand_set(folder: Path, masks: list[np.ndarray], name: str = "cat") -> SupportSet:
    """4 × 4 images and masks; a 2 × 2 block of the mask maps to one cell of the 2 × 2 grid."""
    s = SupportSet(folder)
    for n, m in enumerate(masks):
        s.write_image(n, np.full((4, 4, 3), 40 * n, dtype=np.uint8), {"class": name})
        s.write_mask(n, np.kron(m, np.ones((2, 2))).astype(np.uint8), {"mode": "hand"})
    s.write_attribution(Attribution(torch.zeros(len(masks), 4, 4), torch.zeros(len(masks), 4, 4), META))
    return s


def test_prototypes_of_a_hand_made_set(runner, tmp_path: Path, hand_preset) -> None:
    # image 0: fg cells (0,0), (0,1); bg cell (1,0).  image 1: fg cell (1,1); no bg.  image 2: no fg.
    s = hand_set(tmp_path / "cat", [np.array([[1, 1], [2, 0]]), np.array([[0, 0], [0, 1]]),
                                    np.array([[2, 2], [2, 2]])])
    out = tmp_path / "protos"
    result = runner.invoke(main, ["prototype", str(s.path), "--models", "handx", "-x", "dino", "--clusters", "2",
                                  "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "cat.dino.safetensors")]
    p = read_prototypes(out / "cat.dino.safetensors")
    # image 0 pixels: (1, 10), (2, 20); image 1 pixel (1,1): channel 0 = 4 + 4 = 8 → (8, 80)
    assert torch.allclose(p.fg.instance, torch.tensor([[1.5, 15.0], [8.0, 80.0]]))
    assert p.fg.instance_image.tolist() == [0, 1]
    assert torch.allclose(p.fg.class_proto, torch.tensor([[11 / 3, 110 / 3]]))
    # bg: only image 0's cell (1,0) = (3, 30); image 2 has no fg, so its bg is skipped too
    assert torch.allclose(p.bg.instance, torch.tensor([[3.0, 30.0]])) and p.bg.instance_image.tolist() == [0]
    assert torch.allclose(p.bg.class_proto, torch.tensor([[3.0, 30.0]]))
    assert p.fg.part.shape == (2, 2) and p.bg.part.shape == (1, 2)
    assert p.fg.pooled_index.tolist() == [[0, 0, 0], [0, 0, 1], [1, 1, 1]]
    m = p.meta
    assert m["class"] == "cat" and m["extractor"] == "dino" and m["grid"] == [2, 2]
    assert m["images_used"] == {"fg": 2, "bg": 1} and m["parts"] == {"fg": 2, "bg": 1}
    assert m["mask_modes"] == {"hand": 3} and m["features"] == {"extractor": "dino", "model": "hand"}


def test_a_class_without_foreground_is_one_line_naming_it(runner, tmp_path: Path, hand_preset) -> None:
    s = hand_set(tmp_path / "cat", [np.array([[2, 2], [2, 0]])])
    line = one_line_error(runner.invoke(main, ["prototype", str(s.path), "--models", "handx", "-x", "dino",
                                               "-o", str(tmp_path / "p")]))
    assert "'cat'" in line and "dino" in line and "-n" in line
    assert not (tmp_path / "p" / "cat.dino.safetensors").exists()


def test_missing_masks_are_one_line(runner, tmp_path: Path) -> None:
    s = SupportSet(tmp_path / "cat")
    s.write_image(0, np.zeros((4, 4, 3), np.uint8), {"class": "cat"})
    line = one_line_error(runner.invoke(main, ["prototype", str(s.path), "--models", "tiny", "-o", str(tmp_path)]))
    assert "masks/00000.png" in line and "ovdiff mask" in line


def test_an_extractor_the_preset_lacks_is_one_line(runner, tmp_path: Path) -> None:
    line = one_line_error(runner.invoke(main, ["prototype", str(tmp_path), "-x", "resnet", "--models", "tiny"]))
    assert "'resnet'" in line and "clip, dino, mae, sd" in line


def test_every_extractor_on_a_tiny_support_set(runner, masked: Path, tmp_path: Path) -> None:
    out = tmp_path / "protos"
    args = ["prototype", str(masked), "-x", "sd", "-x", "dino", "-x", "clip", "-x", "mae", "--models", "tiny",
            "-o", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    names = [Path(p).name for p in result.stdout.split()]
    assert names == ["cat.sd.safetensors", "cat.dino.safetensors", "cat.clip.safetensors", "cat.mae.safetensors"]
    dims = {"sd": (256, [16, 16]), "dino": (32, [16, 16]), "clip": (32, [8, 8]), "mae": (32, [8, 8])}
    for name, (dim, grid) in dims.items():
        p = read_prototypes(out / f"cat.{name}.safetensors")
        assert p.dim == dim and p.meta["grid"] == grid
        assert p.fg.class_proto.shape == (1, dim) and 1 <= p.fg.instance.shape[0] <= 3
        assert 1 <= p.fg.part.shape[0] <= 32 and p.fg.pooled_label.max() < p.fg.part.shape[0]
        assert p.meta["models"]["tiny"] is True and len(p.meta["inputs"]["support_sha256"]) == 64

    before = files_of(out)
    assert runner.invoke(main, args).exit_code == 0
    assert files_of(out) == before  # skipped
    line = one_line_error(runner.invoke(main, [*args, "--clusters", "4"]))
    assert "cat.sd.safetensors" in line and "--overwrite" in line
    assert runner.invoke(main, [*args, "--clusters", "4", "--overwrite"]).exit_code == 0
    assert read_prototypes(out / "cat.sd.safetensors").fg.part.shape[0] <= 4


def test_the_same_inputs_give_byte_identical_prototypes(runner, masked: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        r = runner.invoke(main, ["prototype", str(masked), "-x", "sd", "--models", "tiny", "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "cat.sd.safetensors").read_bytes() == (tmp_path / "b" / "cat.sd.safetensors").read_bytes()


@pytest.mark.gpu
def test_prototypes_on_a_gpu_in_half_precision(runner, masked: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    result = runner.invoke(main, ["prototype", str(masked), "--models", "tiny", "--device", "cuda",
                                  "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("sd", "dino", "clip"):
        p = read_prototypes(tmp_path / f"cat.{name}.safetensors")
        assert torch.isfinite(p.fg.class_proto).all()


def test_feature_options_are_stored_and_segment_follows_them(runner, masked: Path, tmp_path: Path) -> None:
    out = tmp_path / "protos"
    args = ["prototype", str(masked), "-x", "sd", "-x", "clip", "--models", "tiny", "-o", str(out),
            "--sd-layers", "paper-v1", "--sd-timestep", "300", "--clip-norm", "clip", "--clip-token"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    sd, clip = read_prototypes(out / "cat.sd.safetensors"), read_prototypes(out / "cat.clip.safetensors")
    assert sd.meta["features"]["layers"] == "paper-v1" and sd.meta["features"]["timestep"] == 300
    assert sd.dim == 16 + 3 * 32 + 3 * 32 + 16  # the tiny SD's query widths without the mid block
    assert (clip.meta["features"]["norm"], clip.meta["features"]["readout"]) == ("clip", "token")
    banks = tmp_path / "banks"
    r = runner.invoke(main, ["filter-stuff", str(out / "cat.sd.safetensors"), str(out / "cat.clip.safetensors"),
                             "--vocab", "cat,", "-o", str(banks), "--stuff-compare", "all"])
    assert r.exit_code == 0, r.output
    # segment rebuilds the extractors as the banks say; any other setting would be refused
    image = masked / "images" / "00000.png"
    r = runner.invoke(main, ["segment", str(image), "--bank", str(banks), "--models", "tiny", "--no-prefilter",
                             "-o", str(tmp_path / "seg")])
    assert r.exit_code == 0, r.output


# -- reruns through the one provenance rule (docs/design.md §4.1) ------------------------------------

MASKS = [np.array([[1, 1], [2, 0]]), np.array([[0, 0], [0, 1]])]


def _proto(runner, folder: Path, out: Path, *extra: str, preset: str = "handx"):
    return runner.invoke(main, ["prototype", str(folder), "--models", preset, "-x", "dino", "--clusters", "2",
                                "-o", str(out), *extra])


def test_fewer_parts_than_asked_are_one_note_for_the_stage(runner, tmp_path: Path, hand_preset) -> None:
    folders = []
    for name in ("cat", "dog", "cow"):
        s = hand_set(tmp_path / name, MASKS)
        for n in range(len(MASKS)):  # each set's images name its class
            s.write_image(n, np.full((4, 4, 3), 40 * n, dtype=np.uint8), {"class": name})
        folders.append(str(s.path))
    out = tmp_path / "protos"
    # each set pools 3 distinct fg vectors and 1 bg vector (see the test above): 6 sides below 32 parts
    result = runner.invoke(main, ["prototype", *folders, "--models", "handx", "-x", "dino", "-o", str(out), "-v"])
    assert result.exit_code == 0, result.output
    summary = ("ovdiff: note: 3 prototype files had fewer distinct fg or bg vectors than 32 parts, so fewer parts "
               "(fewest: 1, cat bg with dino)")
    # -v: each side as it happens, then the one note at the end of the stage
    assert [line for line in result.stderr.splitlines() if "distinct" in line] == [
        *[f"ovdiff: debug: {c} (dino): the {side} pixels hold only {k} distinct vectors, so {k} parts instead of 32"
          for c in ("cat", "dog", "cow") for side, k in (("fg", 3), ("bg", 1))], summary]
    assert read_prototypes(out / "dog.dino.safetensors").meta["parts"] == {"fg": 3, "bg": 1}
    # a rerun sums the reused files the same way; nothing else on stderr
    result = runner.invoke(main, ["prototype", *folders, "--models", "handx", "-x", "dino", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"ovdiff: note: 3 prototype files exist, made the same way from the same "
                                          f"images and masks; reused (first: {out / 'cat.dino.safetensors'})"]


def test_a_mask_edited_in_place_makes_the_file_again(runner, tmp_path: Path, hand_preset) -> None:
    s = hand_set(tmp_path / "cat", MASKS)
    out = tmp_path / "protos"
    assert _proto(runner, s.path, out).exit_code == 0
    before = (out / "cat.dino.safetensors").read_bytes()
    assert _proto(runner, s.path, out).exit_code == 0  # same support set: reused, not rewritten
    assert (out / "cat.dino.safetensors").read_bytes() == before
    # image 1's foreground moves from cell (1,1) to cell (0,0): channel 0 = 4 + 1 = 5 → (5, 50)
    s.write_mask(1, np.kron(np.array([[1, 0], [0, 0]]), np.ones((2, 2))).astype(np.uint8), {"mode": "hand"})
    result = _proto(runner, s.path, out)
    assert result.exit_code == 0, result.output
    p = read_prototypes(out / "cat.dino.safetensors")
    assert torch.allclose(p.fg.instance, torch.tensor([[1.5, 15.0], [5.0, 50.0]]))
    assert torch.allclose(p.fg.class_proto, torch.tensor([[8 / 3, 80 / 3]]))


def test_other_settings_or_models_are_an_error_with_a_fix(runner, tmp_path: Path, hand_preset) -> None:
    comp = registry.Component("hand-features", "the same features, another preset", lambda f, d, t: HandFeatures(),
                              tiny=True)
    registry.register_preset(registry.Preset("handy", "tests", {"extractor.dino": comp}, tiny=True))
    try:
        s = hand_set(tmp_path / "cat", MASKS)
        out = tmp_path / "protos"
        assert _proto(runner, s.path, out).exit_code == 0
        before = (out / "cat.dino.safetensors").read_bytes()
        line = one_line_error(_proto(runner, s.path, out, "--clusters", "1"))
        assert "cat.dino.safetensors" in line and "other settings" in line and "--overwrite" in line
        line = one_line_error(_proto(runner, s.path, out, preset="handy"))
        assert "other models" in line and "--overwrite" in line
        assert (out / "cat.dino.safetensors").read_bytes() == before
        assert _proto(runner, s.path, out, "--overwrite", preset="handy").exit_code == 0
        assert read_prototypes(out / "cat.dino.safetensors").meta["models"]["preset"] == "handy"
    finally:
        registry.unregister_preset("handy")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("occupant", ["foreign", "bank"])
def test_a_file_ovdiff_did_not_make_as_a_prototype_is_never_replaced(runner, tmp_path: Path, hand_preset,
                                                                     occupant: str, overwrite: list[str]) -> None:
    from ovdiff_cli.core.bank import Rows
    from ovdiff_cli.formats.prototypes import Bank, write_bank
    from ovdiff_cli.formats.vocabulary import build

    s = hand_set(tmp_path / "cat", MASKS)
    target = tmp_path / "protos" / "cat.dino.safetensors"
    if occupant == "foreign":
        target.parent.mkdir()
        target.write_bytes(b"my own notes, not a tensor file")
    else:
        empty = Rows(torch.zeros(0, 2), *(torch.zeros(0, dtype=torch.long),) * 3)
        write_bank(target, Bank(empty, empty, build("v", [("cat", None, None)]),
                                {"extractor": "dino", "models": {}, "inputs": {}}))
    before = target.read_bytes()
    line = one_line_error(_proto(runner, s.path, target.parent, *overwrite))
    assert str(target) in line and ("not written by ovdiff" in line or "ovdiff.bank/1" in line)
    assert target.read_bytes() == before


def test_a_locked_prototype_file_is_waited_for_or_one_line(runner, tmp_path: Path, hand_preset,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s = hand_set(tmp_path / "cat", MASKS)
    out = tmp_path / "protos"
    proc = hold_lock(out / "cat.dino.safetensors", 30)
    try:
        monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", "0")  # fail at once, without the note of a wait
        line = one_line_error(_proto(runner, s.path, out))
        assert f"being written by process {proc.pid}" in line and "OVDIFF_LOCK_TIMEOUT" in line
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (out / "cat.dino.safetensors").exists()
    monkeypatch.delenv("OVDIFF_LOCK_TIMEOUT")
    proc = hold_lock(out / "cat.dino.safetensors", 1.0)
    start = time.monotonic()
    result = _proto(runner, s.path, out)  # waits for the holder, then makes the file
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start > 0.5 and proc.wait(timeout=30) == 0
    assert read_prototypes(out / "cat.dino.safetensors").fg.instance.shape == (2, 2)


def test_two_classes_with_one_file_name_never_replace_each_other(runner, masked: Path, tmp_path: Path) -> None:
    """"Cat" and "cat" both become cat.dino.safetensors: the class is a setting of the file, so the
    second is refused instead of taking the first one's place as a "stale" file."""
    import shutil

    from ovdiff_cli.formats.images import png_metadata, open_image, write_rgb_png

    other = tmp_path / "Cat"
    shutil.copytree(masked, other)
    s = SupportSet(other)
    for i in s.image_indices():
        im = open_image(s.image_path(i))
        meta = {**png_metadata(im, s.image_path(i)), "class": "Cat"}
        write_rgb_png(s.image_path(i), np.asarray(im.convert("RGB")), meta)
    out = tmp_path / "protos"
    args = ["-x", "dino", "--models", "tiny", "-o", str(out)]
    assert runner.invoke(main, ["prototype", str(masked), *args]).exit_code == 0
    before = (out / "cat.dino.safetensors").read_bytes()
    line = one_line_error(runner.invoke(main, ["prototype", str(other), *args]))
    assert line == (f"ovdiff: error: {out / 'cat.dino.safetensors'}: was made with other class; "
                    "pass --overwrite to replace it, or choose another -o")
    assert (out / "cat.dino.safetensors").read_bytes() == before
    assert read_prototypes(out / "cat.dino.safetensors").class_name == "cat"


@pytest.mark.parametrize("choice, ran", [("auto", "sklearn"), ("sklearn", "sklearn"), ("torch", "torch")])
def test_each_kmeans_makes_the_hand_worked_parts_and_is_recorded(runner, tmp_path: Path, hand_preset, choice: str,
                                                                 ran: str) -> None:
    # fg pixels (1, 10), (2, 20) of image 0 and (8, 80) of image 1: two parts, (1.5, 15) and (8, 80)
    s = hand_set(tmp_path / "cat", MASKS)
    out = tmp_path / "protos"
    assert _proto(runner, s.path, out, "--kmeans", choice).exit_code == 0
    p = read_prototypes(out / "cat.dino.safetensors")
    assert p.meta["settings"]["kmeans"] == ran  # auto on the CPU is scikit-learn's, as before --kmeans
    parts = p.fg.part[p.fg.part[:, 0].argsort()]
    torch.testing.assert_close(parts, torch.tensor([[1.5, 15.0], [8.0, 80.0]]))
    labels = {tuple(i): int(k) for i, k in zip(p.fg.pooled_index.tolist(), p.fg.pooled_label)}
    assert labels[(0, 0, 0)] == labels[(0, 0, 1)] != labels[(1, 1, 1)]


def test_a_file_from_before_kmeans_was_recorded_counts_as_scikit_learns(runner, tmp_path: Path, hand_preset) -> None:
    from ovdiff_cli.core.prototypes import Prototypes
    from ovdiff_cli.formats.prototypes import write_prototypes

    s = hand_set(tmp_path / "cat", MASKS)
    out = tmp_path / "protos"
    assert _proto(runner, s.path, out).exit_code == 0
    path = out / "cat.dino.safetensors"
    old = read_prototypes(path)
    meta = {**old.meta, "settings": {k: v for k, v in old.meta["settings"].items() if k != "kmeans"}}
    write_prototypes(path, Prototypes(old.fg, old.bg, meta))  # as written before the setting existed
    before = path.read_bytes()
    result = _proto(runner, s.path, out)  # auto on the CPU: scikit-learn's, which that file was made with
    assert result.exit_code == 0 and result.stdout.split() == [str(path)] and path.read_bytes() == before
    line = one_line_error(_proto(runner, s.path, out, "--kmeans", "torch"))
    assert str(path) in line and "settings.kmeans" in line and "--overwrite" in line
    assert path.read_bytes() == before


def test_prototype_shards_split_the_support_sets(runner, tmp_path: Path, hand_preset) -> None:
    folders = [hand_set(tmp_path / name, MASKS, name).path for name in ("cat", "dog", "cow")]
    made = []
    for k in (1, 2):
        result = runner.invoke(main, ["prototype", *map(str, folders), "--models", "handx", "-x", "dino",
                                      "--clusters", "2", "-o", str(tmp_path / "p"), "--shard", f"{k}/2"])
        assert result.exit_code == 0, result.output
        made.append([Path(line).name for line in result.stdout.split()])
    # 3 sets in 2 contiguous parts: [0, 1) and [1, 3)
    assert made == [["cat.dino.safetensors"], ["dog.dino.safetensors", "cow.dino.safetensors"]]


@pytest.mark.gpu
def test_pooling_and_kmeans_stay_on_the_gpu_and_match_the_cpu() -> None:
    from ovdiff_cli.core.prototypes import Pool, build_side
    from ovdiff_cli.core.settings import PrototypeSettings

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 64, 16, 16, generator=g)
    masks = torch.rand(4, 16, 16, generator=g) > 0.5
    sides = {}
    for dev in ("cpu", "cuda"):
        pool = Pool(64)
        for n in range(4):
            pool.add(n, feats[n].to(dev), masks[n].to(dev))
        assert all(t.device.type == dev for t in pool.pixels)
        sides[dev] = build_side(pool, PrototypeSettings(clusters=4, kmeans="torch"))
    cpu, gpu = sides["cpu"], sides["cuda"]
    assert gpu.part.device.type == "cpu" and gpu.pooled_label.device.type == "cpu"
    torch.testing.assert_close(gpu.class_proto, cpu.class_proto, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gpu.instance, cpu.instance, atol=1e-5, rtol=1e-5)
    assert torch.equal(gpu.pooled_index, cpu.pooled_index)
