"""`ovdiff classify` with a hand-set fake CLIP scorer and on the tiny preset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.models import registry
from tests.helpers import one_line_error


class HandScorer:
    """Every image embeds as g = (1, 0); a prompt with cosine c embeds as (c, √(1 − c²))."""

    name = "hand-clip"
    image_size = 224

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines = cosines
        self.encoded: list[str] = []
        self.images = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 224, 224) and 0 <= float(images.min()) and float(images.max()) <= 1
        self.images += images.shape[0]
        return torch.tensor([[1.0, 0.0]]).expand(images.shape[0], 2)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        self.encoded += texts
        return torch.tensor([[c, math.sqrt(1 - c * c)] for c in (self.cosines.get(t, 0.0) for t in texts)])


@pytest.fixture
def scorer():
    holder = {}

    def make(cosines: dict[str, float]) -> HandScorer:
        holder["s"] = HandScorer(cosines)
        comp = registry.Component("hand-clip", "hand-set CLIP", lambda f, d, t: holder["s"], tiny=True)
        registry.clear_cache()  # a loaded scorer is cached by its key
        registry.register_preset(registry.Preset("handclip", "tests", {"scorer": comp}, tiny=True),
                                 replace_existing=True)
        return holder["s"]

    yield make
    registry.unregister_preset("handclip")
    registry.clear_cache()


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    paths = []
    for i, size in enumerate([(40, 30), (30, 50), (64, 64)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((size[1], size[0], 3), 50 * i, np.uint8)).save(p)
        paths.append(str(p))
    return paths


def run(runner, *args: str):
    result = runner.invoke(main, ["classify", *args, "--models", "handclip", "-o", "-"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


COSINES = {"a cat": 0.25, "a dog": 0.20, "a person": 0.10, "a cat and a dog": 0.27}


def test_the_subset_search_picks_the_expected_set(runner, scorer, images) -> None:
    s = scorer({**{"a cat": 0.30, "a dog": 0.29, "a person": 0.10}, "a cat and a dog": 0.31})
    # p: cat e^.30, dog e^.29, person e^.10 over their sum: 0.356, 0.352, 0.291; 1/3 keeps cat, dog.
    # Subsets: "a cat" 0.30, "a dog" 0.29, "a cat and a dog" 0.31 → {cat, dog}; sky is stuff: active.
    (r,) = run(runner, images[0], "--vocab", "cat,dog,person,sky")
    e = [math.exp(x) for x in (0.30, 0.29, 0.10)]
    assert [r["scores"][k] for k in ("cat", "dog", "person")] == pytest.approx([x / sum(e) for x in e])
    assert "sky" not in r["scores"]
    assert r["kept"] == ["cat", "dog"] and r["subset"] == ["cat", "dog"]
    assert r["subset_score"] == pytest.approx(0.31, abs=1e-6)
    assert r["active"] == ["cat", "dog", "sky"]
    assert s.images == 1


def test_a_tie_goes_to_the_smaller_subset(runner, scorer, images) -> None:
    scorer({"a cat": 0.30, "a dog": 0.29, "a person": 0.10, "a cat and a dog": 0.30})
    (r,) = run(runner, images[0], "--vocab", "cat,dog,person")
    assert r["subset"] == ["cat"] and r["active"] == ["cat"]


def test_the_cap_of_ten_and_1023_subset_prompts(runner, scorer, images) -> None:
    names = [f"class{i:02d}" for i in range(12)]
    s = scorer({"a class07": 0.5})  # every other prompt has cosine 0
    (r,) = run(runner, images[0], "--vocab", ",".join(names))
    # p: class07 highest, the other 11 equal and below 1/12: only class07 is kept
    assert r["kept"] == ["class07"] and r["subset"] == ["class07"]
    s = scorer({})  # all equal: p = 1/12 each, all kept, capped at the first 10 in class order
    (r,) = run(runner, images[0], "--vocab", ",".join(names))
    assert r["kept"] == names[:10] and r["subset"] == ["class00"]  # all subsets tie at 0: the smallest, first
    assert len([t for t in s.encoded if " and " in t]) == 1023 - 10


def test_class_and_subset_prompts_are_encoded_once_for_all_images(runner, scorer, images) -> None:
    s = scorer(COSINES)
    records = run(runner, *images, "--vocab", "cat,dog,person")
    assert len(records) == 3 and [r["image"] for r in records] == images
    assert len(s.encoded) == len(set(s.encoded))  # nothing encoded twice
    assert s.images == 3


def test_one_class_and_a_vocabulary_of_stuff_only(runner, scorer, images) -> None:
    s = scorer({"a cat": 0.2})
    (r,) = run(runner, images[0], "--vocab", "cat,")
    assert r["scores"] == {"cat": pytest.approx(1.0)} and r["kept"] == ["cat"] and r["subset"] == ["cat"]
    s = scorer({})
    (r,) = run(runner, images[0], "--vocab", "sky,grass")
    assert r["scores"] == {} and r["kept"] == [] and r["active"] == ["sky", "grass"]
    assert s.images == 0  # the filter is skipped without loading anything


def test_the_tiny_preset_writes_a_file_and_reuses_it(runner, images, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "c.jsonl"
    result = runner.invoke(main, ["classify", *images[:2], "--vocab", "voc", "--models", "tiny", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out)]
    records = read_candidates(out)
    assert [r.image for r in records] == images[:2]
    from ovdiff_cli.formats.vocabulary import builtin

    names = builtin("voc").names
    for r in records:
        assert r.kept and set(r.subset) <= set(r.kept) and r.subset == [n for n in r.kept if n in r.subset]
        assert r.active == [n for n in names if n in set(r.subset)]  # voc has no stuff: active = S*, in class order
    assert sum(records[0].scores.values()) == pytest.approx(1.0)

    def refuse(*_a, **_k):
        raise AssertionError("the model must not be loaded again for images already classified")

    # another image alone: the file keeps the first two and adds it
    result = runner.invoke(main, ["classify", images[2], "--vocab", "voc", "--models", "tiny", "-o", str(out)])
    assert result.exit_code == 0 and [r.image for r in read_candidates(out)] == images
    monkeypatch.setattr(registry, "load", refuse)
    result = runner.invoke(main, ["classify", *images, "--vocab", "voc", "--models", "tiny", "-o", str(out)])
    assert result.exit_code == 0, result.output
    line = one_line_error(runner.invoke(main, ["classify", *images, "--vocab", "context", "--models", "tiny",
                                               "-o", str(out)]))
    assert str(out) in line and "--overwrite" in line


def test_a_missing_image_is_one_line(runner, tmp_path: Path) -> None:
    line = one_line_error(runner.invoke(main, ["classify", str(tmp_path / "none.jpg"), "--vocab", "voc",
                                               "--models", "tiny", "-o", "-"]))
    assert "none.jpg" in line and "does not exist" in line
    assert runner.invoke(main, ["classify", str(tmp_path / "none.jpg")]).exit_code == 2  # no --vocab


def classify_to(runner, out: Path, *args: str):
    return runner.invoke(main, ["classify", *args, "--models", "handclip", "-o", str(out)])


def test_a_record_is_reused_only_for_the_same_image_content(runner, scorer, images, tmp_path: Path) -> None:
    import hashlib

    s = scorer(COSINES)
    out = tmp_path / "c.jsonl"
    assert classify_to(runner, out, *images[:2], "--vocab", "cat,dog,person").exit_code == 0
    assert s.images == 2
    assert classify_to(runner, out, *images[:2], "--vocab", "cat,dog,person").exit_code == 0
    assert s.images == 2  # same content: both reused
    Image.fromarray(np.full((10, 10, 3), 7, np.uint8)).save(images[1])  # edited in place, same path
    assert classify_to(runner, out, *images[:2], "--vocab", "cat,dog,person").exit_code == 0
    assert s.images == 3  # only the edited one again
    records = read_candidates(out)
    assert [r.image for r in records] == images[:2]
    for r in records:
        assert r.extra["schema"] == "ovdiff.candidates/1"
        assert r.extra["inputs"] == {"image_sha256": hashlib.sha256(Path(r.image).read_bytes()).hexdigest()}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("content", [
    "my shopping list\n",
    # a valid candidates file, but one written by hand (no schema): not ovdiff's to replace
    '{"image": "a.jpg", "scores": {}, "kept": [], "subset": [], "subset_score": 0, "active": []}\n',
    "",
], ids=["text", "hand-made", "empty"])
def test_a_file_classify_did_not_write_is_never_replaced(runner, scorer, images, tmp_path: Path, overwrite: bool,
                                                         content: str) -> None:
    s = scorer(COSINES)
    out = tmp_path / "notes.jsonl"
    out.write_text(content, encoding="utf-8")
    line = one_line_error(classify_to(runner, out, images[0], "--vocab", "cat,dog",
                                      *(["--overwrite"] if overwrite else [])))
    assert line.startswith(f"ovdiff: error: {out}: exists and was not written by ovdiff, so ovdiff will not "
                           "replace it (not even with --overwrite)")
    assert out.read_text(encoding="utf-8") == content and s.images == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(Path(i).name for i in images), "notes.jsonl"])


def test_overwrite_replaces_a_candidates_file_of_ovdiffs(runner, scorer, images, tmp_path: Path) -> None:
    scorer(COSINES)
    out = tmp_path / "c.jsonl"
    assert classify_to(runner, out, *images[:2], "--vocab", "cat,dog,person").exit_code == 0
    line = one_line_error(classify_to(runner, out, images[2], "--vocab", "cat,dog"))
    assert f"{out}: was made with other settings" in line and "--overwrite" in line
    assert classify_to(runner, out, images[2], "--vocab", "cat,dog", "--overwrite").exit_code == 0
    (record,) = read_candidates(out)  # the earlier images' records went with the file they were in
    # p(cat) = e^.25 / (e^.25 + e^.20) = 0.512 is the only one >= 1/2: kept alone
    assert record.image == images[2] and record.kept == ["cat"] and record.active == ["cat"]


# A real `ovdiff classify` process with a hand scorer (every cosine 0) whose image encoder touches
# $MARK and then waits for $GO, so that the test knows when the process holds the file's lock.
CHILD = r"""
import os, sys, time
from pathlib import Path
import torch
from ovdiff_cli.models import registry

class Scorer:
    name = "hand-clip"
    image_size = 224

    def encode_images(self, images):
        Path(os.environ["MARK"]).touch()
        start = time.monotonic()
        while os.environ["GO"] and not Path(os.environ["GO"]).exists() and time.monotonic() - start < 120:
            time.sleep(0.05)
        return torch.tensor([[1.0, 0.0]]).expand(images.shape[0], 2)

    def encode_texts(self, texts):
        return torch.tensor([[0.0, 1.0]]).expand(len(texts), 2)

comp = registry.Component("hand-clip", "hand-set CLIP", lambda f, d, t: Scorer(), tiny=True)
registry.register_preset(registry.Preset("handclip", "tests", {"scorer": comp}, tiny=True))
from ovdiff_cli.cli import main
sys.argv[0] = "ovdiff"
main()
"""


def test_two_runs_into_one_file_keep_both_runs_records(images, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "c.jsonl"
    root = Path(__file__).resolve().parents[2]

    def start(name: str, image: str, go: bool) -> subprocess.Popen:
        env = {**os.environ, "MARK": str(tmp_path / f"{name}.mark"), "GO": str(tmp_path / "go") if go else ""}
        return subprocess.Popen([sys.executable, "-c", CHILD, "classify", image, "--vocab", "cat,dog",
                                 "--models", "handclip", "-o", str(out)], env=env, cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("first", images[0], go=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "first.mark").exists():  # the first holds the file's lock
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = start("second", images[1], go=False)
        assert second.stderr is not None
        assert f"{out} is being written by process {first.pid}" in second.stderr.readline()
        (tmp_path / "go").touch()
        assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    finally:
        first.kill()
    # without the lock, the second would have read the file before the first wrote it, and dropped its record
    assert [r.image for r in read_candidates(out)] == images[:2]


def test_subset_prompts_past_the_context_length_are_warned_about(monkeypatch) -> None:
    from ovdiff_cli.models.clip import build_tiny_clip
    from ovdiff_cli.stages import classify as stage

    said: list[str] = []
    monkeypatch.setattr(stage.log, "warn_once", lambda key, message: said.append(message))
    clip = build_tiny_clip(torch.device("cpu"), torch.float32)
    # "a cat" is 2 tokens and " and" 1: 25 classes make 3·25 − 1 = 74 tokens, 76 with BOS and EOS
    stage._warn_long_prompts(clip, ["cat"] * 24 + ["big cat"])        # 77 tokens: all are read
    assert said == []
    stage._warn_long_prompts(clip, ["cat"] * 24 + ["big fat cat"])    # 78: the encoder cuts one
    assert said == ["the longest subset prompts exceed CLIP's 77 tokens and are cut (their last classes lose weight); "
                    "a lower --clip-topk shortens them"]
