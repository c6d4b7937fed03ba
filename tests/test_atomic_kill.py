"""A write killed midway leaves no file behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ovdiff_cli.formats.atomic import write_bytes

SCRIPT = r"""
import signal, sys, time
from ovdiff_cli.cli import _terminate
from ovdiff_cli.formats.atomic import atomic_open
signal.signal(signal.SIGTERM, _terminate)  # as `ovdiff` installs it
with atomic_open(sys.argv[1], "wb") as f:
    f.write(b"half a file")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _start(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def test_terminated_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "bank.dino.safetensors"
    proc = _start(target)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list(target.parent.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_write_leaves_no_target(tmp_path: Path) -> None:
    target = tmp_path / "cat.dino.safetensors"
    proc = _start(target)
    proc.kill()
    proc.wait(timeout=30)
    # SIGKILL cannot be caught: only a hidden temporary file may remain, never the target.
    assert not target.exists()
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".cat.dino.safetensors.") and left[0].name.endswith(".tmp")
    # The next write of the same target (the resumed run) removes what the killed writer left.
    write_bytes(target, b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["cat.dino.safetensors"]
    assert target.read_bytes() == b"done"


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "bank.sd.safetensors"
    proc = _start(target)
    try:
        write_bytes(target, b"other writer")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names[0].startswith(".bank.sd.safetensors.") and names[1] == "bank.sd.safetensors"
    finally:
        proc.kill()
        proc.wait(timeout=30)
