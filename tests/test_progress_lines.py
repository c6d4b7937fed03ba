"""Feedback when stderr is not a terminal (a pipe, a file, a Slurm log): plain progress lines at
most every few seconds, and a note before the slow model imports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ovdiff_cli import log
from ovdiff_cli.formats.labelmap import write_label_map
from tests.helpers import run


def test_plain_lines_are_rate_limited_over_the_loops(monkeypatch, capsys) -> None:
    # A clock that moves only when the test says: each item "takes" 2 s, the interval is 5 s.
    now = [100.0]
    monkeypatch.setattr(log, "_clock", lambda: now[0])
    monkeypatch.setattr(log, "PLAIN_PROGRESS_INTERVAL_S", 5.0)
    log.set_verbosity(0)
    for desc, n in (("cat", 6), ("dog", 2)):
        for _ in log.progress(range(n), desc=desc, unit="batch"):
            now[0] += 2.0
    # 5 s after the first loop began: item 3 (at 6 s); then 5 s after that: item 6 (at 12 s); the
    # dog's two items end 2 and 4 s after the last line, too soon for another.
    assert capsys.readouterr().err.splitlines() == ["ovdiff: note: cat 3/6 batches (6 s)",
                                                    "ovdiff: note: cat 6/6 batches (12 s)"]


def test_quiet_prints_no_progress(monkeypatch, capsys) -> None:
    monkeypatch.setattr(log, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    log.set_verbosity(-1)
    try:
        assert list(log.progress(["a", "b"], desc="x", unit="img")) == ["a", "b"]
    finally:
        log.set_verbosity(0)
    assert capsys.readouterr().err == ""


def test_a_stage_with_captured_stderr_prints_plain_progress_lines(monkeypatch, runner, tmp_path: Path) -> None:
    monkeypatch.setattr(log, "PLAIN_PROGRESS_INTERVAL_S", 0.0)  # a line per image
    labels = np.array([[0, 1], [1, 1]], np.uint8)
    for folder in ("pred", "gt"):
        for stem in ("a", "b"):
            write_label_map(tmp_path / folder / f"{stem}.png", labels)
    result = run(runner, "score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--vocab", "cat,", "--json")
    assert result.exit_code == 0, result.output
    # the stage is the command, so it is named once; the seconds are whatever the machine took
    assert [re.sub(r"\(\d+ s\)$", "(T s)", line) for line in result.stderr.splitlines()] == [
        "ovdiff: note: score: 1/2 images (T s)", "ovdiff: note: score: 2/2 images (T s)"]
    assert json.loads(result.stdout)["images"] == 2


@pytest.mark.parametrize(("args", "pending", "said"), [([], True, True), (["-q"], True, False), ([], False, False)])
def test_loading_models_is_said_before_the_slow_imports(monkeypatch, runner, tmp_path: Path, args: list[str],
                                                        pending: bool, said: bool) -> None:
    # pending: torch not yet imported, as in a fresh process; in this test process it always is
    monkeypatch.setattr(log, "_imports_pending", lambda: pending)
    result = run(runner, "mask", str(tmp_path / "missing"), "--models", "tiny", *args)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("ovdiff: error: "), result.stderr
    assert lines[:-1] == (["ovdiff: note: loading models…"] if said else [])
