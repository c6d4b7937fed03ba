"""`ovdiff mask` through the command line: hand-made support sets with a registered hand-made
proposer (expected masks worked out by hand), the threshold variant, resume, extras and errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.core.attention import Attribution
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.models import registry
from ovdiff_cli.models.interfaces import Proposals
from tests.helpers import FAST, files_of, one_line_error

META = {"class": "cat", "models": {"preset": "test", "tiny": True, "components": {}}, "inputs": {}}
ROW = torch.tensor([0.9, 0.9, 0.5, 0.1, 0.0, 0.0])
A = ROW.expand(6, 6).clone()  # every row alike: columns 0-1 high, 2 middling, 3-5 low


def cols(*cs: int) -> torch.Tensor:
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[:, list(cs)] = True
    return m


class HandProposer:
    """Image 0: two overlapping instances; image 1: none. Images are told apart by their grey level."""

    name = "hand"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, images: torch.Tensor) -> list[Proposals]:
        self.calls += 1
        out = []
        for im in images:
            if round(float(im[0, 0, 0]) * 255) == 0:
                out.append(Proposals(torch.stack([cols(0, 1, 2), cols(1, 2, 3)]), torch.tensor([0.9, 0.6])))
            else:
                out.append(Proposals(torch.zeros(0, 6, 6, dtype=torch.bool), torch.zeros(0)))
        return out


@pytest.fixture
def hand_preset():
    proposer = HandProposer()
    comp = registry.Component("hand-proposer", "hand-made proposals for tests", lambda f, d, t: proposer, tiny=True)
    registry.register_preset(registry.Preset("hand", "tests", {"proposer.hand": comp}, tiny=True))
    yield proposer
    registry.unregister_preset("hand")
    registry.clear_cache()


def hand_set(folder: Path, maps: torch.Tensor | None = None, maps64: torch.Tensor | None = None) -> SupportSet:
    s = SupportSet(folder)
    for i in range(2):
        s.write_image(i, np.full((6, 6, 3), 40 * i, dtype=np.uint8), {"class": "cat"})
    maps = torch.stack([A, A]) if maps is None else maps
    s.write_attribution(Attribution(maps, maps if maps64 is None else maps64, META))
    return s


def test_masks_from_hand_made_proposals(runner, tmp_path: Path, hand_preset) -> None:
    s = hand_set(tmp_path / "cat")
    result = runner.invoke(main, ["mask", str(s.path), "--models", "hand", "--proposer", "hand", "--save-proposals"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(s.path)]
    m0, meta0 = s.read_mask(0)
    # image 0: m1 (cols 0-2, mean 0.7667) beats m2 (cols 1-3, 0.4) and the uncovered cols 4-5 (0);
    # fg = cols 0-2; bg = cols 4-5 with A < 0.2, eroded once: col 4 touches col 3 → only col 5
    expected = np.zeros((6, 6), np.uint8)
    expected[:, :3] = 1
    expected[:, 5] = 2
    assert (m0 == expected).all()
    assert meta0["mode"] == "hand" and (meta0["fg_index"], meta0["bg_index"]) == (1, 0)
    assert meta0["scores"] == pytest.approx([0.0, 2.3 / 3, 1.5 / 3])
    assert meta0["detector_scores"] == pytest.approx([0.9, 0.6])
    # image 1: no proposal → fallback: fg A > 0.5 (cols 0-1), bg A < 0.2 (cols 3-5), no erosion
    m1, meta1 = s.read_mask(1)
    assert meta1["mode"] == "fallback"
    assert (m1 == np.array([[1, 1, 0, 2, 2, 2]] * 6, np.uint8)).all()
    saved = s.read_proposals()
    assert torch.equal(saved.masks, torch.stack([cols(0, 1, 2), cols(1, 2, 3)]))
    assert saved.scores.tolist() == pytest.approx([0.9, 0.6]) and saved.image.tolist() == [0, 0]
    assert saved.meta["proposer"] == "hand"


def test_a_rerun_skips_and_other_settings_need_overwrite(runner, tmp_path: Path, hand_preset) -> None:
    s = hand_set(tmp_path / "cat")
    args = ["mask", str(s.path), "--models", "hand", "--proposer", "hand"]
    assert runner.invoke(main, args).exit_code == 0
    before, calls = files_of(s.path), hand_preset.calls
    assert runner.invoke(main, args).exit_code == 0
    assert files_of(s.path) == before and hand_preset.calls == calls

    line = one_line_error(runner.invoke(main, [*args, "--bg-attn-max", "0.05"]))
    assert "masks/00000.png" in line and "--overwrite" in line
    assert runner.invoke(main, [*args, "--bg-attn-max", "0.05", "--overwrite"]).exit_code == 0
    # bg of image 0 now: col 5 has A = 0 < 0.05 → still col 5 (cols 4-5 then erosion)
    assert s.read_mask(0)[1]["settings"]["bg_attn_max"] == 0.05

    # a changed attribution file (a resampled set) makes the masks stale: remade, no error
    narrow = [*args, "--bg-attn-max", "0.05"]
    mask0 = s.mask_path(0).read_bytes()
    hand_set(s.path, maps=torch.stack([A, A.flip(1)]))
    calls = hand_preset.calls
    result = runner.invoke(main, narrow)
    assert result.exit_code == 0, result.output
    assert hand_preset.calls > calls
    # image 1 has no proposal: fallback on the flipped row [0, 0, .1, .5, .9, .9]: fg > 0.5, bg < 0.2
    assert (s.read_mask(1)[0] == np.array([[2, 2, 2, 0, 1, 1]] * 6, np.uint8)).all()
    # image 0's pixels are as before, but its record names the new attribution
    assert (s.read_mask(0)[0] == np.array([[1, 1, 1, 0, 0, 2]] * 6, np.uint8)).all()
    assert s.mask_path(0).read_bytes() != mask0
    assert s.read_mask(0)[1]["inputs"]["attribution"] == hashlib.sha256(s.attribution_path.read_bytes()).hexdigest()


def test_the_threshold_variant_uses_multi_otsu_of_the_class(runner, tmp_path: Path) -> None:
    # the class's 64-grid maps hold three values: multi-Otsu thresholds 0.5/256 and 128.5/256
    a = torch.zeros(2, 6, 6)
    a[:, :, :2] = 1.0
    a[:, :, 2:4] = 0.5
    s = hand_set(tmp_path / "cat", maps=a, maps64=a)
    result = runner.invoke(main, ["mask", str(s.path), "--proposer", "threshold", "--overlay"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    m, meta = s.read_mask(0)
    assert meta["mode"] == "threshold" and meta["thresholds"] == pytest.approx([0.5 / 256, 128.5 / 256])
    assert (m == np.array([[1, 1, 0, 0, 2, 2]] * 6, np.uint8)).all()
    assert sorted(p.name for p in s.overlays_dir.iterdir()) == ["00000.png", "00001.png"]


def test_threshold_falls_back_when_multi_otsu_cannot_split(runner, tmp_path: Path) -> None:
    a = torch.zeros(2, 6, 6)
    a[:, :, :3] = 1.0  # two values only
    s = hand_set(tmp_path / "cat", maps=a, maps64=a)
    assert runner.invoke(main, ["mask", str(s.path), "--proposer", "threshold"]).exit_code == 0
    m, meta = s.read_mask(0)
    assert meta["thresholds"] == [0.2, 0.5] and meta["otsu"] is False
    assert (m == np.array([[1, 1, 1, 2, 2, 2]] * 6, np.uint8)).all()


def test_auto_without_cutler_thresholds_and_says_so_once(runner, tmp_path: Path) -> None:
    a, b = hand_set(tmp_path / "a"), hand_set(tmp_path / "b")
    result = runner.invoke(main, ["mask", str(a.path), str(b.path), "--models", "paper"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--proposer threshold" in warnings[0]
    assert warnings[0].startswith("ovdiff: warning: ") and "`ovdiff models download paper`" in warnings[0]
    assert a.read_mask(0)[1]["mode"] == "threshold"


def test_the_tiny_preset_without_cutler_is_one_plain_note(runner, tmp_path: Path) -> None:
    a, b = hand_set(tmp_path / "a"), hand_set(tmp_path / "b")
    result = runner.invoke(main, ["mask", str(a.path), str(b.path), "--models", "tiny"])
    assert result.exit_code == 0, result.output
    # nothing to fix (the preset was chosen), so one note for both sets, no warning, no download advice
    assert result.stderr.splitlines() == ["ovdiff: note: preset 'tiny' has no CutLER, so masks come from "
                                          "thresholding the attribution maps (as with --proposer threshold)"]
    assert a.read_mask(0)[1]["mode"] == b.read_mask(0)[1]["mode"] == "threshold"


@pytest.mark.parametrize("models, parts", [
    ("paper", ["cutler-cascade", "cutler_cascade_final.pth", "ovdiff models download paper"]),
    ("tiny", ["'proposer.cutler'"]),
], ids=["paper-without-the-checkpoint", "tiny-has-no-cutler"])
def test_asking_for_cutler_without_it_is_one_line(runner, empty_caches: Path, models: str, parts: list[str]) -> None:
    s = hand_set(empty_caches / "cat")
    line = one_line_error(runner.invoke(main, ["mask", str(s.path), "--proposer", "cutler", "--models", models]))
    assert all(part in line for part in parts), line
    assert not s.masks_dir.exists()


def test_cutler_from_the_cache_makes_the_masks_without_detectron2(runner, tmp_path: Path, cutler_in_cache) -> None:
    import sys

    s = SupportSet(tmp_path / "cat")
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[8:24, 8:24] = 255  # a white square; the attribution is high on it
    s.write_image(0, image, {"class": "cat"})
    a = torch.zeros(1, 32, 32)
    a[0, 8:24, 8:24] = 1.0
    s.write_attribution(Attribution(a, a, META))
    detectron2_before = {m for m in sys.modules if m.split(".")[0] == "detectron2"}
    result = runner.invoke(main, ["mask", str(s.path), "--models", "paper", "--save-proposals"])  # auto → CutLER
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    m, meta = s.read_mask(0)
    assert meta["mode"] == "cutler" and meta["proposals"] >= 1 and meta["fg_pixels"] > 0
    assert meta["models"] == {"proposer": "cutler-cascade", "tiny": False}
    assert meta["settings"]["proposer"] == "cutler"
    assert len(meta["detector_scores"]) == meta["proposals"] and min(meta["detector_scores"]) > 0.35
    saved = s.read_proposals()
    assert saved.masks.shape[1:] == (32, 32) and saved.meta["proposer"] == "cutler"
    # made by ovdiff's own detector: the run imported nothing of detectron2 (CI does not even have it)
    assert {m for m in sys.modules if m.split(".")[0] == "detectron2"} == detectron2_before


def _set_without_attribution(folder: Path) -> SupportSet:
    s = SupportSet(folder)
    s.write_image(0, np.zeros((6, 6, 3), np.uint8), {"class": "cat"})
    return s


@pytest.mark.parametrize("extra, parts", [
    ([], ["attribution.safetensors", "ovdiff attribute"]),
    (["--save-proposals"], ["--save-proposals"]),
], ids=["missing-attribution", "save-proposals-with-threshold"])
def test_missing_attribution_and_other_bad_input(runner, tmp_path: Path, extra: list[str], parts: list[str]) -> None:
    s = _set_without_attribution(tmp_path / "cat")
    line = one_line_error(runner.invoke(main, ["mask", str(s.path), "--proposer", "threshold", *extra]))
    assert all(part in line for part in parts), line
    assert not s.masks_dir.exists()


def test_fallback_thresholds_out_of_order_are_a_usage_error(runner, tmp_path: Path) -> None:
    s = _set_without_attribution(tmp_path / "cat")
    assert runner.invoke(main, ["mask", str(s.path), "--fallback-fg", "0.1", "--fallback-bg", "0.3"]).exit_code == 2


def test_sample_attribute_mask_through_the_command_line(runner, tmp_path: Path) -> None:
    out = tmp_path / "support"
    sampled = runner.invoke(main, ["sample", "cat", *FAST, "-o", str(out)])
    assert sampled.exit_code == 0, sampled.output
    attributed = runner.invoke(main, ["attribute", "-"], input=sampled.stdout)
    assert attributed.exit_code == 0, attributed.output
    # attribute prints its files; mask takes them for their folders
    result = runner.invoke(main, ["mask", "-", "--models", "tiny", "--overlay"], input=attributed.stdout)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "cat")]
    s = SupportSet(out / "cat")
    for i in s.image_indices():
        m, meta = s.read_mask(i)
        assert m.shape == (128, 128) and set(np.unique(m)) <= {0, 1, 2}
        assert meta["fg_pixels"] == int((m == 1).sum()) > 0
    assert len(list(s.overlays_dir.iterdir())) == 3
