"""Advisory output locks (formats/lock.py) and what killed writers leave, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import lock, tensorfile
from tests.helpers import hold_lock


def test_lock_file_names_its_owner_and_goes_on_release(tmp_path: Path) -> None:
    target = tmp_path / "seg" / "photo.png"
    with lock.locked(target):
        text = (tmp_path / "seg" / ".photo.png.lock").read_text().split()
        assert text[1] == str(os.getpid())
        with lock.locked(target):  # re-entrant within a process
            pass
        assert (tmp_path / "seg" / ".photo.png.lock").exists()
    # the folder made for the lock is removed again: nothing was written in it
    assert list(tmp_path.iterdir()) == []


def test_folder_with_outputs_stays(tmp_path: Path) -> None:
    target = tmp_path / "seg" / "photo.png"
    with lock.locked(target):
        target.write_bytes(b"x")
    assert [p.name for p in (tmp_path / "seg").iterdir()] == ["photo.png"]


def test_second_process_fails_after_the_timeout_with_one_line(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "support" / "cat"
    proc = hold_lock(target, 30)
    try:
        monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", "0.3")
        start = time.monotonic()
        with pytest.raises(BadFile) as e, lock.locked(target):
            pass
        assert 0.3 <= time.monotonic() - start < 5
        message = str(e.value)
        assert message.startswith(f"{target}: is being written by process {proc.pid} on ")
        assert "OVDIFF_LOCK_TIMEOUT" in message and "\n" not in message
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_process_waits_for_the_first(tmp_path: Path) -> None:
    target = tmp_path / "banks" / "bank.sd.safetensors"
    proc = hold_lock(target, 1.0)
    start = time.monotonic()
    with lock.locked(target):
        waited = time.monotonic() - start
        assert proc.poll() is not None or proc.stdout.readline().strip() == "released"
    proc.wait(timeout=30)
    assert waited > 0.3


def test_a_dead_processes_lock_is_taken_over_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "prototypes" / "cat.sd.safetensors"
    proc = hold_lock(target, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = tmp_path / "prototypes" / ".cat.sd.safetensors.lock"
    assert left.read_text().split()[1] == str(proc.pid)  # kill -9 leaves the lock file behind
    monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", "0")  # it must not wait for a dead process
    import logging

    logging.getLogger("ovdiff").propagate = True
    try:
        with caplog.at_level("INFO", logger="ovdiff"), lock.locked(target):
            assert left.read_text().split()[1] == str(os.getpid())
    finally:
        logging.getLogger("ovdiff").propagate = False
    assert f"left by process {proc.pid}" in caplog.text and "which is gone" in caplog.text
    assert not left.exists()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_timeout_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from ovdiff_cli.errors import BadInput

    monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", value)
    with pytest.raises(BadInput, match="OVDIFF_LOCK_TIMEOUT"), lock.locked(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []


KILLED_WRITE = r"""
import sys, torch
import ovdiff_cli.formats.atomic as atomic
from ovdiff_cli.formats import tensorfile

real = atomic.atomic_open

class Stop:
    # the bytes are half written when the process is killed
    def __init__(self, f): self.f = f
    def write(self, data):
        self.f.write(data[: len(data) // 2]); self.f.flush()
        print("writing", flush=True)
        import time; time.sleep(60)

import contextlib
@contextlib.contextmanager
def slow_open(path, mode="wb"):
    with real(path, mode) as f:
        yield Stop(f)

tensorfile.atomic_open = slow_open
schema = tensorfile.Schema("ovdiff.thing", 1, "x", {"x": tensorfile.TensorSpec("float32", ("N",))})
tensorfile.write(sys.argv[1], schema, {"x": torch.ones(100_000)}, {})
"""


def _kill_while_writing(target: Path) -> None:
    """kill -9 a process halfway through writing a safetensors file to ``target``."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_during_a_safetensors_write_leaves_nothing_after_a_rerun(tmp_path: Path) -> None:
    """Case 7: no temporary file of safetensors' own; ours is swept by the next write."""
    target = tmp_path / "out" / "cat.sd.safetensors"
    _kill_while_writing(target)
    left = list(target.parent.iterdir())
    assert not target.exists() and len(left) == 1
    assert left[0].name.startswith(".cat.sd.safetensors.") and left[0].name.endswith(".tmp")
    schema = tensorfile.Schema("ovdiff.thing", 1, "x", {"x": tensorfile.TensorSpec("float32", ("N",))})
    tensorfile.write(target, schema, {"x": torch.ones(3)}, {})
    assert [p.name for p in target.parent.iterdir()] == ["cat.sd.safetensors"]
    assert tensorfile.read(target, schema).tensors["x"].tolist() == [1.0, 1.0, 1.0]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not the owner-only mode of a temporary file


def test_lock_takes_the_sweep_of_a_killed_writers_files(tmp_path: Path) -> None:
    """A rerun that only locks (and then reuses everything) still removes a killed writer's leftovers."""
    target = tmp_path / "out" / "cat.sd.safetensors"
    _kill_while_writing(target)
    from ovdiff_cli.formats import atomic

    atomic._swept.clear()  # a new process has swept nothing yet
    with lock.locked(target):
        pass
    assert list(target.parent.iterdir()) == []


def test_locks_left_by_killed_processes_are_swept_from_the_folder(tmp_path: Path) -> None:
    """kill -9 leaves `.x.lock`; the next run that locks anything in that folder removes it, but
    never the lock of a live process."""
    dead = hold_lock(tmp_path / "seg" / "a.png", 60)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    live = hold_lock(tmp_path / "seg" / "b.png", 60)
    try:
        lock._swept.clear()
        with lock.locked(tmp_path / "seg" / "c.png"):
            names = sorted(p.name for p in (tmp_path / "seg").iterdir())
        assert names == [".b.png.lock", ".c.png.lock"]
    finally:
        live.kill()
        live.wait(timeout=30)
