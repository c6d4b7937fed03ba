"""The example scripts run as the README's Examples section says: `PRESET=tiny N=2 STEPS=2` in
front, and the arguments and variables its lines name (VOCAB for slurm_sample.sh, the VOC root
for evaluate_voc.sh); each in a fresh folder, where it writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
#: What the README puts in front of every example.
TINY = {**ENV, "PRESET": "tiny", "N": "2", "STEPS": "2"}
needs_cli = pytest.mark.skipif(shutil.which("ovdiff") is None, reason="the ovdiff command is not installed")


def script(name: str, cwd: Path, *args: str, **env: str) -> str:
    """``PRESET=tiny N=2 STEPS=2 bash examples/NAME ARGS`` (``python`` for a .py) in ``cwd``; its stdout."""
    runner = [sys.executable] if name.endswith(".py") else ["bash"]
    result = subprocess.run([*runner, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                            env={**TINY, **env}, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    return result.stdout


@needs_cli
def test_models_example(tmp_path: Path) -> None:
    assert script("models.sh", tmp_path).strip().splitlines()[-1] == "4 models ready"


def test_python_api_example(tmp_path: Path) -> None:
    from ovdiff_cli.formats.prototypes import read_bank
    from ovdiff_cli.models import load

    out = script("python_api.py", tmp_path, TMPDIR=str(tmp_path))  # its temporary folder inside tmp_path
    path = Path(out.splitlines()[-1].split(" holds ")[0])
    assert path.parent.parent == tmp_path and path.name == "bank.text.safetensors"
    bank = read_bank(path)
    assert bank.vocabulary.names == ["cat", "dog", "sky"]
    assert bank.fg.owner.tolist() == [1, 2, 3]
    expected = load("tiny", "scorer").encode_texts(["a cat", "a dog", "a sky"])
    torch.testing.assert_close(bank.fg.vectors, expected)


@needs_cli
def test_support_sets_example(tmp_path: Path) -> None:
    out = script("support_sets.sh", tmp_path)
    assert out.splitlines() == ["cat\t[2, 128, 128]\tcat</w>",
                                "donut with chocolate glaze\t[2, 128, 128]\tdonut</w> with</w> chocolate</w> glaze</w>"]


@needs_cli
def test_quickstart_example(tmp_path: Path) -> None:
    script("quickstart.sh", tmp_path)
    from ovdiff_cli.formats.labelmap import read_label_map

    labels = read_label_map(tmp_path / "quickstart" / "segmentation" / "table.png")
    assert labels.shape == (240, 320) and labels.max() <= 2
    assert (tmp_path / "quickstart" / "segmentation" / "table.overlay.png").is_file()


@needs_cli
def test_pipes_example(tmp_path: Path) -> None:
    out = script("pipes.sh", tmp_path).splitlines()
    banks = [json.loads(line) for line in out[:-1]]
    assert sorted(b["extractor"] for b in banks) == ["dino", "sd"]
    assert all(b["classes"]["sky"]["bg"] == 0 for b in banks)  # sky is stuff
    assert out[-1] == "1 label maps"


@needs_cli
def test_add_class_example_samples_only_the_new_class(tmp_path: Path) -> None:
    out = script("add_class.sh", tmp_path)
    assert out.strip().splitlines()[-1] == "new support images: 2 of dog, 0 of the other classes"


@needs_cli
def test_slurm_example_shards_the_classes(tmp_path: Path) -> None:
    vocab = "cat,dog,bird,sky,tree"  # the README's VOCAB for a tiny run
    script("slurm_sample.sh", tmp_path, VOCAB=vocab)
    assert sorted(p.name for p in (tmp_path / "slurm" / "support").iterdir()) == ["bird", "cat", "dog", "sky", "tree"]
    # as one task of a real array (Slurm sets these): the second of four contiguous parts is the second class
    script("slurm_sample.sh", tmp_path, VOCAB=vocab, WORK="task",
           SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_COUNT="4")
    assert [p.name for p in (tmp_path / "task" / "support").iterdir()] == ["dog"]


@needs_cli
def test_evaluate_voc_example(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from ovdiff_cli.formats.labelmap import write_label_map

    base = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    ids = ["2007_000032", "2007_000039"]
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{i}.jpg")
        labels = np.zeros((60, 80), np.uint8)
        labels[10:40, 20:50] = 15
        write_label_map(base / "SegmentationClass" / f"{i}.png", labels)
    script("evaluate_voc.sh", tmp_path, str(tmp_path / "data"))
    report = json.loads((tmp_path / "voc" / "score.json").read_text())
    assert report["images"] == 2 and len(report["classes"]) == 21 and report["protocol"]["dataset"] == "voc"
    assert sum(report["label"]) == 2 * 60 * 80


def test_api_pipeline_example(tmp_path: Path) -> None:
    lines = script("api_pipeline.py", tmp_path).splitlines()
    assert lines[0].startswith("cat: foreground ") and lines[-1].startswith("pixels per label: {")
    assert (tmp_path / "api-work" / "segmentation" / "table.png").is_file()
