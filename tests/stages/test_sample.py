"""`ovdiff sample` on the tiny preset through the command line: files, determinism, resume,
overwrite, sharding, the safety checker, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.models.generator import DiffusersGenerator
from ovdiff_cli.stages import sample as sample_stage
from tests.helpers import FAST, files_of, one_line_error, run


@pytest.fixture
def baseline(cat_and_plant: Path) -> Path:
    """cat and potted plant, sampled once per session (tests/conftest.py) for the tests that only read."""
    return cat_and_plant


def test_sample_writes_one_folder_per_class_and_prints_them(baseline: Path) -> None:
    cat = SupportSet(baseline / "cat")
    assert cat.image_indices() == [0, 1, 2]
    rgb, meta = cat.read_image(0)
    assert rgb.shape == (128, 128, 3)  # the tiny preset draws at 128²
    assert meta["prompt"] == "A good picture of a cat"
    assert (meta["seed"], meta["steps"], meta["guidance"], meta["model"]) == (42, 2, 8.0, "tiny-sd")
    assert meta["scheduler"]["algorithm_type"] == "dpmsolver++" and meta["scheduler"]["solver_order"] == 2
    assert meta["negative_prompt"].startswith("text, low quality")
    with Image.open(cat.image_path(0)) as im:
        assert json.loads(im.info["ovdiff"])["prompt"] == "A good picture of a cat"

    rec = cat.read_crossattn()
    assert rec.attn.shape == (3, 16, 6, 16, 16)  # every prompt token recorded, 16² = the tiny latent
    assert rec.positions.tolist() == [1, 2, 3, 4, 5, 6]
    assert rec.phrase_positions.tolist() == [6]
    assert rec.tokens == ("a</w>", "good</w>", "picture</w>", "of</w>", "a</w>", "cat</w>")
    assert rec.counts.tolist() == [[2 * 8] * 16] * 3  # 2 steps × 8 heads per layer, conditional branch
    assert rec.meta["class"] == "cat" and rec.meta["replaced"] == 0 and rec.meta["models"]["preset"] == "tiny"
    plant = SupportSet(baseline / "potted-plant").read_crossattn()
    assert plant.phrase_positions.tolist() == [6, 7]
    assert not (baseline / "cat" / ".crossattn-partial").exists()


def test_stdout_carries_only_the_folders(runner, tmp_path: Path) -> None:
    result = run(runner, "sample", "cat", "dog", *FAST, "--steps", "1", "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "s" / "cat"), str(tmp_path / "s" / "dog")]


def test_the_same_seed_gives_byte_identical_files(runner, baseline: Path, tmp_path: Path) -> None:
    result = run(runner, "sample", "cat", "potted plant", *FAST, "-o", str(tmp_path / "again"))
    assert result.exit_code == 0, result.output
    for cls in ("cat", "potted-plant"):
        assert files_of(tmp_path / "again" / cls) == files_of(baseline / cls)


def test_every_class_starts_from_the_same_noise_so_order_and_shards_do_not_matter(runner, baseline: Path,
                                                                                   tmp_path: Path) -> None:
    # potted plant alone, as the second of a two-way shard of (cat, potted plant): same files
    result = run(runner, "sample", "cat", "potted plant", *FAST, "--shard", "2/2", "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "s" / "potted-plant")]
    assert not (tmp_path / "s" / "cat").exists()
    assert files_of(tmp_path / "s" / "potted-plant") == files_of(baseline / "potted-plant")


def test_a_rerun_skips_a_finished_set(runner, baseline: Path, tmp_path: Path, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a finished set must not be sampled again")

    out = tmp_path / "s"  # a copy: the session's set is shared with other modules
    shutil.copytree(baseline, out)
    before = files_of(out / "cat")
    monkeypatch.setattr(DiffusersGenerator, "generate", refuse)
    result = run(runner, "sample", "cat", *FAST, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "cat")]
    assert files_of(out / "cat") == before


def test_a_killed_run_resumes_at_its_batch_and_ends_as_an_uninterrupted_one(runner, baseline: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    real = DiffusersGenerator.generate
    calls: list[int] = []

    def dies_on_second_batch(self, prompts, *a, **k):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, prompts, *a, **k)

    monkeypatch.setattr(DiffusersGenerator, "generate", dies_on_second_batch)
    out = tmp_path / "s"
    result = run(runner, "sample", "cat", *FAST, "-o", str(out))
    assert result.exit_code != 0
    s = SupportSet(out / "cat")
    assert s.image_indices() == [0, 1] and s.partial_path(0).is_file() and not s.crossattn_path.exists()

    calls.clear()
    monkeypatch.setattr(DiffusersGenerator, "generate", lambda self, p, *a, **k: calls.append(len(p)) or real(
        self, p, *a, **k))
    result = run(runner, "sample", "cat", *FAST, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert calls == [1]  # only the last batch (image 2) was drawn
    assert files_of(out / "cat") == files_of(baseline / "cat")


def test_other_settings_over_a_set_are_an_error_unless_overwrite(runner, baseline: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert run(runner, "sample", "cat", *FAST, "-o", str(out)).exit_code == 0
    before = files_of(out / "cat")
    line = one_line_error(run(runner, "sample", "cat", *FAST, "--guidance", "3", "-o", str(out)))
    assert str(out / "cat") in line and "other guidance" in line and "--overwrite" in line
    assert files_of(out / "cat") == before

    result = run(runner, "sample", "cat", *FAST, "--guidance", "3", "--overwrite", "-o", str(out))
    assert result.exit_code == 0, result.output
    fresh = tmp_path / "fresh"
    assert run(runner, "sample", "cat", *FAST, "--guidance", "3", "-o", str(fresh)).exit_code == 0
    assert files_of(out / "cat") == files_of(fresh / "cat")
    assert files_of(out / "cat") != before


def test_overwrite_with_fewer_images_leaves_no_stale_ones(runner, baseline: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert run(runner, "sample", "cat", *FAST, "-o", str(out)).exit_code == 0
    result = run(runner, "sample", "cat", *FAST, "-n", "1", "--overwrite", "-o", str(out))
    assert result.exit_code == 0, result.output
    s = SupportSet(out / "cat")
    assert s.image_indices() == [0] and s.read_crossattn().attn.shape[0] == 1
    # the first image of a set draws the same noise whatever the set's size (up to batch-size rounding)
    diff = s.read_image(0)[0].astype(int) - SupportSet(baseline / "cat").read_image(0)[0].astype(int)
    assert abs(diff).max() <= 1


def test_flagged_images_are_replaced_and_counted(runner, baseline: Path, tmp_path: Path, monkeypatch) -> None:
    class FlagsFirstImageOnce:
        def __init__(self) -> None:
            self.calls = 0

        def flags(self, images: torch.Tensor) -> list[bool]:
            self.calls += 1
            return [self.calls == 1 and j == 0 for j in range(images.shape[0])]

    monkeypatch.setattr(sample_stage, "_safety", lambda *a: FlagsFirstImageOnce())
    out = tmp_path / "s"
    result = run(runner, "sample", "cat", *FAST, "-o", str(out))
    assert result.exit_code == 0, result.output
    s, base = SupportSet(out / "cat"), SupportSet(baseline / "cat")
    assert s.read_crossattn().meta["replaced"] == 1
    assert s.read_image(0)[1]["replaced"] is True and s.read_image(1)[1]["replaced"] is False
    assert not (s.read_image(0)[0] == base.read_image(0)[0]).all()  # a fresh draw, not a black image
    assert s.read_image(0)[0].std() > 0
    for i in (1, 2):
        assert (s.read_image(i)[0] == base.read_image(i)[0]).all()
    # its attention is the redraw's, the others' unchanged
    rec, base_rec = s.read_crossattn(), base.read_crossattn()
    assert not torch.equal(rec.attn[0], base_rec.attn[0]) and torch.equal(rec.attn[1:], base_rec.attn[1:])


def test_the_tiny_preset_has_no_safety_checker_to_ask_for(runner, tmp_path: Path) -> None:
    line = one_line_error(run(runner, "sample", "cat", *FAST, "--safety-checker", "-o", str(tmp_path)))
    assert "no safety checker" in line


def test_a_free_prompt_attributes_all_its_tokens(runner, tmp_path: Path) -> None:
    result = run(runner, "sample", "thing", *FAST, "-n", "1", "--prompt", "a red  bicycle", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    rec = SupportSet(tmp_path / "thing").read_crossattn()
    assert rec.meta["prompt"] == "a red bicycle" and rec.phrase_positions.tolist() == [1, 2, 3]


def test_a_vocabulary_and_its_prompt_overlay(runner, tmp_path: Path) -> None:
    vocab = tmp_path / "v.txt"
    vocab.write_text("# name<TAB>prompt\ntv\ttelevision screen\n")
    result = run(runner, "sample", "--vocab", str(vocab), *FAST, "-n", "1", "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    rec = SupportSet(tmp_path / "s" / "tv").read_crossattn()
    assert rec.meta["prompt"] == "A good picture of a television screen"
    assert rec.phrase_positions.tolist() == [6, 7]


@pytest.mark.parametrize("args, expected", [
    (["sample", ""], "WORD is empty"),
    (["sample", "  "], "WORD is empty"),
    (["sample", "--vocab", "no-such-vocabulary.txt"], "no-such-vocabulary.txt"),
    (["sample", "--vocab", "vocc"], "neither a file nor a built-in"),
    (["sample", "cat", "--template", "A photo of a cat"], "--template"),
    (["sample", " ".join(["zebra"] * 80)], "tokens"),
    (["sample", "cat", "dog", "--prompt", "two animals"], "--prompt"),
])
def test_bad_input_is_one_line_and_writes_nothing(runner, tmp_path: Path, args: list[str], expected: str) -> None:
    line = one_line_error(run(runner, *args, "--models", "tiny", "-o", str(tmp_path / "out")))
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_one_line(runner, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    line = one_line_error(run(runner, "sample", "cat", *FAST, "-o", str(blocker / "support")))
    assert str(blocker) in line and "-o" in line


def test_words_or_vocab_are_required(runner) -> None:
    assert run(runner, "sample").exit_code == 2


def test_plan_prompt_rejects_a_phrase_cut_off_by_the_token_limit() -> None:
    from ovdiff_cli.errors import BadInput
    from ovdiff_cli.formats.vocabulary import from_words
    from ovdiff_cli.models import registry

    gen = DiffusersGenerator(registry.load("tiny", "generator"))
    fits = from_words([" ".join(["zebra"] * 70)]).classes[0]  # 5 template tokens + 70 = 75
    assert sample_stage.plan_prompt(gen, fits, "A good picture of a {}").phrase_positions[-1] == 75
    too_long = from_words([" ".join(["zebra"] * 71)]).classes[0]
    with pytest.raises(BadInput, match="76 tokens"):
        sample_stage.plan_prompt(gen, too_long, "A good picture of a {}")


@pytest.mark.gpu
def test_sample_and_attribute_in_half_precision_on_a_gpu(runner, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    result = run(runner, "sample", "cat", *FAST, "--device", "cuda", "--dtype", "float16", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert run(runner, "attribute", str(tmp_path / "cat")).exit_code == 0
    s = SupportSet(tmp_path / "cat")
    rec = s.read_crossattn()
    assert torch.isfinite(rec.attn).all() and rec.attn.sum() > 0
    assert s.read_image(0)[1]["model"] == "tiny-sd"


@pytest.mark.weights
def test_sd15_records_16_layers_on_the_64_grid(tmp_path: Path, runner) -> None:
    from ovdiff_cli.models import registry

    comp = registry.get_preset("paper").component("generator")
    if comp.missing_files() or comp.missing_packages():
        pytest.skip("SD-1.5 weights not in the cache: run `ovdiff models download paper`")
    result = run(runner, "sample", "potted plant", "-n", "1", "--steps", "2", "--no-safety-checker",
                 "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    rec = SupportSet(tmp_path / "potted-plant").read_crossattn()
    assert rec.attn.shape == (1, 16, 7, 64, 64) and rec.phrase_positions.tolist() == [6, 7]
    assert rec.counts.tolist() == [[2 * 8] * 16]


def test_deterministic_mode_restores_the_process_settings() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with sample_stage.deterministic_mode():
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


def test_without_reseeding_a_skipped_class_keeps_the_noise_sequence(runner, tmp_path: Path) -> None:
    # -n 3 at batch 2: the last batch is shorter; a rerun that skips cat must still leave dog as a fresh run
    args = ["-n", "3", "--batch-size", "2", "--steps", "1", "--models", "tiny", "--no-reseed-per-class"]
    assert run(runner, "sample", "cat", *args, "-o", str(tmp_path / "a")).exit_code == 0
    assert run(runner, "sample", "cat", "dog", *args, "-o", str(tmp_path / "a")).exit_code == 0
    assert run(runner, "sample", "cat", "dog", *args, "-o", str(tmp_path / "b")).exit_code == 0
    assert files_of(tmp_path / "a" / "dog") == files_of(tmp_path / "b" / "dog")
