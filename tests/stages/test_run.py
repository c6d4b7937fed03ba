"""`ovdiff run`: every stage in one go, reusing what earlier runs left."""

from __future__ import annotations

from pathlib import Path

from ovdiff_cli.cli import main
from ovdiff_cli.formats.labelmap import read_label_map
from ovdiff_cli.models.generator import DiffusersGenerator
from tests.helpers import one_line_error

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
    lines = result.stderr.splitlines()
    assert all(line.startswith(("ovdiff: note: ", "ovdiff: warning: ")) for line in lines), result.stderr
    # the same one note as `ovdiff mask --models tiny`, nothing more about CutLER
    assert [line for line in lines if "CutLER" in line] == [
        "ovdiff: note: preset 'tiny' has no CutLER, so masks come from thresholding the attribution maps "
        "(as with --proposer threshold)"]
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


def test_run_segments_by_content_and_names_its_own_fixes(runner, tmp_path: Path) -> None:
    import hashlib
    import json

    from PIL import Image

    table = Image.open(IMAGE).convert("RGB")
    first, second = tmp_path / "d1" / "photo.png", tmp_path / "d2" / "photo.png"
    for path, picture in ((first, table), (second, table.crop((0, 0, 280, 200)))):
        path.parent.mkdir()
        picture.save(path)
    work = tmp_path / "w"

    def segmented(image: Path) -> tuple[tuple[int, ...], str]:
        result = runner.invoke(main, ["run", "--vocab", "cat,donut", str(image), *ARGS, "-o", str(work)])
        assert result.exit_code == 0, result.output
        (label_map,) = result.stdout.split()
        with Image.open(label_map) as im:
            digest = json.loads(im.info["ovdiff"])["inputs"]["image_sha256"]
        return read_label_map(label_map).shape, digest

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert segmented(first) == ((240, 320), sha(first))
    # another photo.png into the same work folder: its own label map, not the first one's
    assert segmented(second) == ((200, 280), sha(second))
    table.crop((0, 0, 120, 100)).save(second)  # edited in place
    assert segmented(second) == ((100, 120), sha(second))
    # other settings over the label map: the fix named exists on `run` (it has no --overwrite)
    line = one_line_error(runner.invoke(main, ["run", "--vocab", "cat,donut", str(second), *ARGS, "-o", str(work),
                                               "--pamr", "-q"]))
    assert line.endswith("photo.png: was made with other settings.pamr; choose another -o for `ovdiff run`, or redo this "
                         "stage alone with `ovdiff segment --overwrite`")


def test_run_refuses_clashing_names_where_segment_would_write_them(runner, tmp_path: Path) -> None:
    import shutil

    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        shutil.copy(IMAGE, tmp_path / d / "photo.png")
    work = tmp_path / "w"
    line = one_line_error(runner.invoke(main, ["run", "--vocab", "cat,dog", str(tmp_path / "d1" / "photo.png"),
                                               str(tmp_path / "d2" / "photo.png"), *ARGS, "-o", str(work)]))
    assert f"{work}/vocabularies/inline-" in line and "/segmentation/photo.png would be both" in line
    assert not work.exists()  # refused before anything was drawn


def test_run_segments_with_the_extractors_it_is_given(runner, tmp_path: Path) -> None:
    """A second run with fewer -x does not pick up the banks an earlier run left beside its own: its
    label map would be made with other models, a conflict that names them; in a new -o it is made."""
    from ovdiff_cli.formats.images import read_png_metadata

    work = str(tmp_path / "w")
    result = runner.invoke(main, ["run", "--vocab", "cat,donut", IMAGE, *ARGS, "-o", work])
    assert result.exit_code == 0, result.output
    (label_map,) = result.stdout.split()
    assert sorted(read_png_metadata(label_map)["inputs"]["banks"]) == ["dino", "sd"]
    assert ARGS[-4:] == ["-x", "sd", "-x", "dino"]
    args = ARGS[:-4] + ["-x", "dino"]
    line = one_line_error(runner.invoke(main, ["run", "--vocab", "cat,donut", IMAGE, *args, "-o", work, "-q"]))
    assert line.endswith("table.png: was made with other models.extractors.sd; choose another -o for `ovdiff run`, "
                         "or redo this stage alone with `ovdiff segment --overwrite`")
    assert sorted(read_png_metadata(label_map)["inputs"]["banks"]) == ["dino", "sd"]  # left as it was
    result = runner.invoke(main, ["run", "--vocab", "cat,donut", IMAGE, *args, "-o", str(tmp_path / "w2")])
    assert result.exit_code == 0, result.output
    (label_map,) = result.stdout.split()
    assert sorted(read_png_metadata(label_map)["inputs"]["banks"]) == ["dino"]
