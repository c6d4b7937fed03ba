"""`ovdiff run`: every stage in one go, reusing what earlier runs left."""

from __future__ import annotations

from pathlib import Path

from ovdiff_cli.cli import main
from ovdiff_cli.formats.labelmap import read_label_map
from ovdiff_cli.models.generator import DiffusersGenerator
from tests.stages.test_sample import one_line_error

ROOT = Path(__file__).resolve().parents[2]
IMAGE = str(ROOT / "examples" / "data" / "table.png")
ARGS = ["--models", "tiny", "-n", "2", "--steps", "2", "-x", "sd", "-x", "dino"]


def test_run_and_add_a_class(runner, tmp_path: Path, monkeypatch) -> None:
    real = DiffusersGenerator.generate
    drawn: list[str] = []

    def counting(self, prompts, *a, **k):
        drawn.extend(prompts)
        return real(self, prompts, *a, **k)

    monkeypatch.setattr(DiffusersGenerator, "generate", counting)
    result = runner.invoke(main, ["run", "--vocab", "cat,donut", IMAGE, *ARGS, "-o", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    (label_map,) = result.stdout.split()
    assert read_label_map(label_map).shape == (240, 320)
    assert sorted(set(drawn)) == ["A good picture of a cat", "A good picture of a donut"]

    drawn.clear()
    result = runner.invoke(main, ["run", "--vocab", "cat,donut,dog", IMAGE, *ARGS, "-o", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert set(drawn) == {"A good picture of a dog"}  # cat and donut are reused
    assert sorted(p.name for p in (tmp_path / "w" / "prototypes").iterdir()) == [
        f"{c}.{x}.safetensors" for c in ("cat", "dog", "donut") for x in ("dino", "sd")]
    assert len(list((tmp_path / "w" / "vocabularies").iterdir())) == 2  # one per vocabulary

    drawn.clear()
    result = runner.invoke(main, ["run", "--vocab", "cat,donut,dog", IMAGE, *ARGS, "-o", str(tmp_path / "w")])
    assert result.exit_code == 0 and drawn == []  # nothing to do but print the label map


def test_run_errors(runner, tmp_path: Path) -> None:
    line = one_line_error(runner.invoke(main, ["run", "--vocab", "cat,", str(tmp_path / "none.jpg"), *ARGS]))
    assert "none.jpg" in line
    assert runner.invoke(main, ["run", IMAGE]).exit_code == 2  # no --vocab
