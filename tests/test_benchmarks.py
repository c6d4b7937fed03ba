"""benchmarks/pipeline.py: its --quick mode runs every stage and reports consistent numbers."""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pipeline.py"


def test_pipeline_benchmark_quick() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout)  # stdout holds the JSON object alone; notes went to stderr
    assert (r["preset"], r["V"], r["N"], r["M"], r["steps"]) == ("tiny", 2, 2, 2, 2)
    assert r["device"].startswith("CPU") and r["dtype"] == "float32"
    assert r["proposer"] == "threshold"  # the tiny preset has no CutLER
    assert r["kmeans"] == "sklearn"  # --kmeans auto on the CPU, read back from every prototype file
    # units by hand from V = N = M = 2: V·N sampled and masked images, V classes, M test images
    expected = [("sample", 4), ("attribute", 2), ("mask", 4), ("prototype", 2), ("filter-stuff", 2),
                ("classify", 2), ("segment", 2)]
    stages = r["stages"]
    assert [(s["stage"], s["units"]) for s in stages] == expected
    for s in stages:
        assert s["seconds"] > 0 and s["peak_memory_bytes"] > 0
        assert s["seconds_per_unit"] == pytest.approx(s["seconds"] / s["units"], rel=1e-12)
    total = sum(s["seconds"] for s in stages)
    assert sum(s["share"] for s in stages) == pytest.approx(1, abs=1e-6)
    assert stages[0]["share"] == pytest.approx(stages[0]["seconds"] / total, rel=1e-12)
    assert r["offline_s"] == pytest.approx(sum(s["seconds"] for s in stages[:5]), rel=1e-12)
    assert r["online_s"] == pytest.approx(stages[5]["seconds"] + stages[6]["seconds"], rel=1e-12)
    assert r["total_s"] == pytest.approx(total, rel=1e-12)
    parts = stages[3]["parts"]  # the prototype stage, one extractor at a time, within its time
    assert [p["stage"] for p in parts] == ["prototype sd", "prototype dino", "prototype clip"]
    assert all(p["seconds"] > 0 for p in parts) and sum(p["seconds"] for p in parts) <= stages[3]["seconds"]


def test_cpu_peak_memory_is_per_stage() -> None:
    """A stage's peak is reset as it starts: 256 MiB touched and freed before it do not count."""
    import torch

    spec = importlib.util.spec_from_file_location("pipeline_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    memory = bench.Memory(torch.device("cpu"))
    if "reset per stage" not in memory.kind:
        pytest.skip("this kernel cannot reset the peak resident set")
    # fresh anonymous mappings, touched: resident when made, given back when closed (memory the
    # allocator freed earlier in a long test process could otherwise be reused without growing the set)
    big = _touched(256 * 2**20)
    memory.reset()
    with_big = memory.peak()
    big.close()
    memory.reset()
    without = memory.peak()
    assert with_big - without > 200 * 2**20
    again = _touched(64 * 2**20)
    assert memory.peak() - without > 50 * 2**20  # the peak follows what is touched after the reset
    again.close()


def _touched(size: int) -> mmap.mmap:
    """An anonymous private mapping of ``size`` bytes with every page written."""
    m, page = mmap.mmap(-1, size), b"\1" * 2**20
    for _ in range(size // len(page)):
        m.write(page)
    return m
