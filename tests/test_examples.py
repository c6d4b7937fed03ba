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


@needs_cli
def test_multi_gpu_example_splits_the_work_between_processes(tmp_path: Path, runner) -> None:
    import numpy as np
    from PIL import Image

    from ovdiff_cli.cli import main
    from ovdiff_cli.formats.labelmap import read_label_map, write_label_map
    from ovdiff_cli.stages.score import score

    # the README's tiny run: two processes on the CPU, one class each (sky is stuff: filter-stuff has work to
    # do) and one small test image each (each ovdiff process costs a torch import and a model load)
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, stem in enumerate(["a", "b"]):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(images / f"{stem}.png")
        labels = np.zeros((60, 80), np.uint8)
        labels[10:40, 20:50] = i + 1
        write_label_map(gt / f"{stem}.png", labels)
    out = script("multi_gpu.sh", tmp_path, GPUS="2", VOCAB="cat,sky", SHORT_SIDE="64", IMAGES=str(images),
                 GT=str(gt), CUDA_VISIBLE_DEVICES="")  # no GPU even where there is one: the CPU run is compared
    work = tmp_path / "multi-gpu"

    def listed(k: int, name: str) -> list[str]:
        return [Path(p).name for p in (work / f"rank{k}" / name).read_text().splitlines()]

    # each class sampled and prototyped by exactly one process: RANK 0 the first half of the vocabulary
    assert sorted(p.name for p in (work / "support").iterdir()) == ["cat", "sky"]
    assert [sorted(listed(k, "prototypes.txt")) for k in (0, 1)] == [
        ["cat.clip.safetensors", "cat.dino.safetensors", "cat.sd.safetensors"],
        ["sky.clip.safetensors", "sky.dino.safetensors", "sky.sd.safetensors"]]
    # each image segmented by one process, into the label map one process makes of both with the same banks
    assert [listed(k, "label-maps.txt") for k in (0, 1)] == [["a.png"], ["b.png"]]
    single = runner.invoke(main, ["segment", str(images / "a.png"), str(images / "b.png"), "--bank",
                                  str(work / "banks"), "--models", "tiny", "--device", "cpu", "--short-side", "64",
                                  "-o", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    for stem in ("a", "b"):
        np.testing.assert_array_equal(read_label_map(work / "segmentation" / f"{stem}.png"),
                                      read_label_map(tmp_path / "single" / f"{stem}.png"))
    # the shards' scores, merged, are the score of all the label maps at once
    parts = [json.loads((work / f"rank{k}" / "score.json").read_text()) for k in (0, 1)]
    assert [p["images"] for p in parts] == [1, 1]
    merged, once = json.loads((work / "score.json").read_text()), score(work / "segmentation", gt).to_json()
    assert merged["images"] == once["images"] == 2 and merged["protocol"]["merged"] == 2
    for key in ("classes", "intersection", "union", "pred", "label", "confusion", "iou", "mIoU"):
        assert merged[key] == once[key], key
    assert "ovdiff score: 2 images" in out and f"mIoU {100 * once['mIoU']:.1f}" in out


FAKE_OVDIFF = r"""#!/usr/bin/env bash
# records each call with the variables multi_gpu.sh sets; passes paths along as the real commands print them
echo "$1 gpu=${CUDA_VISIBLE_DEVICES-none} rank=${RANK-none} world=${WORLD_SIZE-none} omp=${OMP_NUM_THREADS-none}" \
  "device=$(echo "$*" | sed -n 's/.*--device \([^ ]*\).*/\1/p')" >> "$CALLS"
case $1 in
  sample) if [ "${RANK-}" = "${FAIL_RANK-}" ]; then echo "ovdiff: error: sampling failed" >&2; exit 1; fi
          echo "support/class$RANK" ;;
  filter-stuff) cat > /dev/null ;;
  *) cat ;;
esac
"""


def test_multi_gpu_example_pins_each_process_to_its_gpu(tmp_path: Path) -> None:
    # a stand-in `ovdiff` that records its environment: the GPU plumbing, checked without GPUs
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ovdiff").write_text(FAKE_OVDIFF)
    (tmp_path / "bin" / "ovdiff").chmod(0o755)
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"

    def calls(**env: str) -> list[str]:
        (tmp_path / "calls").unlink(missing_ok=True)
        script("multi_gpu.sh", tmp_path, PATH=path, CALLS=str(tmp_path / "calls"), RANK="9", WORLD_SIZE="10", **env)
        return sorted((tmp_path / "calls").read_text().splitlines())

    # two visible GPUs (3 and 5): a process on each, RANK/WORLD_SIZE for sample and segment only; the
    # processes split the CPU's cores
    cores = os.cpu_count() or 1
    omp = max(cores // 2, 1)
    assert calls(CUDA_VISIBLE_DEVICES="3,5") == sorted(
        [f"{cmd} gpu={g} rank={r} world={w} omp={omp} device=auto"
         for g, r0 in (("3", "0"), ("5", "1")) for cmd, r, w in (
             ("sample", r0, "2"), ("attribute", "none", "none"), ("mask", "none", "none"),
             ("prototype", "none", "none"), ("segment", r0, "2"))]
        + [f"filter-stuff gpu=3,5 rank=none world=none omp={omp} device="])
    # three processes on those two GPUs: the third shares the first's
    sampled = [c for c in calls(CUDA_VISIBLE_DEVICES="3,5", GPUS="3") if c.startswith("sample")]
    assert [c.split(" omp=")[0] for c in sampled] == ["sample gpu=3 rank=0 world=3", "sample gpu=3 rank=2 world=3",
                                                     "sample gpu=5 rank=1 world=3"]
    # no GPU: GPUS processes on the CPU, splitting its cores
    assert [c for c in calls(CUDA_VISIBLE_DEVICES="", GPUS="2") if c.startswith("segment")] == [
        f"segment gpu= rank={r} world=2 omp={omp} device=cpu" for r in (0, 1)]
    # a process that fails stops the script, which names it
    result = subprocess.run(["bash", str(ROOT / "examples" / "multi_gpu.sh")], capture_output=True, text=True,
                            cwd=tmp_path, env={**TINY, "PATH": path, "CALLS": str(tmp_path / "calls"),
                                               "CUDA_VISIBLE_DEVICES": "", "GPUS": "2", "FAIL_RANK": "1"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:] == [
        "ovdiff: error: sampling failed",
        "multi_gpu.sh: prototypes failed in process(es) 1; logs in multi-gpu/rank*/prototypes.log"]
