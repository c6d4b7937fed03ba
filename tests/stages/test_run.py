"""`ovdiff run`: every stage in one go, reusing what earlier runs left."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert f"{work}/vocabularies/cat-dog-" in line and "/segmentation/photo.png would be both" in line
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


# -- reruns with other settings: refused before anything is drawn -------------------------------------

def _drawn_set(work: Path, **settings: object) -> Path:
    """``work/support/cat`` as `run --models tiny -n 2 --steps 2` draws it: one image whose metadata holds
    the sample settings (only their recorded form matters to the look ahead)."""
    import numpy as np

    from ovdiff_cli.core.settings import SampleSettings
    from ovdiff_cli.formats.supportset import SupportSet

    s = SampleSettings(num_images=2, steps=2, batch_size=8)
    meta = {"source": "sd", "class": "cat", "phrase": "cat", "prompt": "A good picture of a cat", "model": "tiny-sd",
            "negative_prompt": s.negative_prompt, "seed": s.seed, "reseed_per_class": True, "steps": s.steps,
            "guidance": s.guidance, "scheduler": s.scheduler, "num_images": s.num_images, "batch_size": 8,
            "size": 128, "safety_checker": False, "tiny": True, "models": {"preset": "tiny"}, "inputs": {},
            "index": 0, "replaced": False, **settings}
    SupportSet(work / "support" / "cat").write_image(0, np.zeros((8, 8, 3), np.uint8), meta)
    return work / "support" / "cat"


@pytest.mark.parametrize("option, value, differs", [("-n", "3", "num_images"), ("--steps", "3", "steps"),
                                                    ("--models", "paper", "models.preset")])
def test_run_with_other_settings_is_refused_before_any_model(runner, tmp_path: Path, monkeypatch, option: str,
                                                             value: str, differs: str) -> None:
    """The quick start again with another -n (or --steps, or preset) over its work folder: one line, exit 1,
    before the stages start (no model, no new file), naming an option `run` has."""
    import ovdiff_cli.stages.run as stages_run
    from tests.helpers import files_of

    work = tmp_path / "w"
    folder = _drawn_set(work)
    before = files_of(work)
    monkeypatch.setattr(stages_run, "run", lambda *a, **k: pytest.fail("the stages started"))
    args = {"-n": "2", "--steps": "2", "--models": "tiny"} | {option: value}
    result = runner.invoke(main, ["run", "--vocab", "cat,donut with chocolate glaze", IMAGE, "-o", str(work),
                                  *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line == (f"ovdiff: error: {folder}: was made with other {differs}; choose another -o for `ovdiff run`, "
                    "or redo this stage alone with `ovdiff sample --overwrite`")
    assert files_of(work) == before
    help_text = runner.invoke(main, ["run", "--help"]).output
    assert "-o, --output" in help_text and "--overwrite" not in help_text.replace("--overwrite.", "")


def test_the_look_ahead_lets_through_what_the_stages_reuse(tmp_path: Path) -> None:
    """Same settings: nothing refused (the stages reuse the set); a folder of the user's photos is refused."""
    from ovdiff_cli.core.settings import SampleSettings
    from ovdiff_cli.errors import BadFile
    from ovdiff_cli.formats import provenance, vocabulary
    from ovdiff_cli.stages.run_plan import RunSettings, check_ahead

    work = tmp_path / "w"
    _drawn_set(work)
    vocab = vocabulary.parse("cat,dog")
    same = RunSettings(sample=SampleSettings(num_images=2, steps=2, batch_size=8))
    with provenance.within_run():
        check_ahead(vocab, [Path(IMAGE)], work=work, preset="tiny", settings=same)  # no error
        (work / "support" / "dog" / "images").mkdir(parents=True)
        (work / "support" / "dog" / "images" / "00000.png").write_bytes(Path(IMAGE).read_bytes())
        with pytest.raises(BadFile, match="was not written by ovdiff.*choose another -o for `ovdiff run`"):
            check_ahead(vocab, [Path(IMAGE)], work=work, preset="tiny", settings=same)


# -- vocabulary folders: a readable prefix, the digest, the class list -------------------------------

def test_vocabulary_folders_are_named_by_their_classes(tmp_path: Path) -> None:
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.run_plan import MAX_PREFIX_BYTES, vocabulary_folder

    quick = vocabulary.parse("cat,donut with chocolate glaze")
    assert vocabulary_folder(tmp_path, quick) == (tmp_path / "vocabularies" /
                                                  f"cat-donut-with-chocolate-glaze-{quick.digest()[:8]}")
    # a long list: the first names, cut at a word, within the bound; the digest whole
    many = vocabulary.parse(",".join(f"class number {i}" for i in range(30)))
    name = vocabulary_folder(tmp_path, many).name
    assert name == f"class-number-0-class-number-1-class-{many.digest()[:8]}"
    assert len(name) <= MAX_PREFIX_BYTES + 9
    # two lists with the same first names (past the cut) stay apart; a named vocabulary keeps its name
    other = vocabulary.parse(",".join(f"class number {i}" for i in range(31)))
    assert vocabulary_folder(tmp_path, other).name == f"class-number-0-class-number-1-class-{other.digest()[:8]}"
    assert other.digest()[:8] != many.digest()[:8]
    voc = vocabulary.parse("voc")
    assert vocabulary_folder(tmp_path, voc).name == f"voc-{voc.digest()[:8]}"
    # one class longer than the bound: its first words
    long = vocabulary.parse("a very long class name that keeps going and going,")
    assert vocabulary_folder(tmp_path, long).name == f"a-very-long-class-name-that-keeps-going-{long.digest()[:8]}"


def test_an_earlier_inline_folder_is_still_used(tmp_path: Path) -> None:
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.run_plan import vocabulary_folder

    vocab = vocabulary.parse("cat,dog")
    earlier = tmp_path / "vocabularies" / f"inline-{vocab.digest()[:8]}"
    assert vocabulary_folder(tmp_path, vocab).name == f"cat-dog-{vocab.digest()[:8]}"
    earlier.mkdir(parents=True)
    assert vocabulary_folder(tmp_path, vocab) == earlier


def test_the_class_list_reads_back_as_the_vocabulary(tmp_path: Path) -> None:
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.run_plan import write_class_list

    vocab = vocabulary.parse("cat,sky,tank")
    path = write_class_list(tmp_path / "v", vocab)
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if not x.startswith("#")]
    assert lines == ["cat\tcat\tthing", "sky\tsky\tstuff", "tank\tliquid tank\tthing"]
    again = vocabulary.read_file(path)
    assert again.classes == vocab.classes


def test_a_class_list_ovdiff_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    from ovdiff_cli.errors import BadFile
    from ovdiff_cli.formats.vocabulary import parse
    from ovdiff_cli.stages.run_plan import write_class_list

    vocab = parse("cat,dog")
    written = write_class_list(tmp_path, vocab)
    assert written.read_text().splitlines()[2:] == ["cat\tcat\tthing", "dog\tdog\tthing"]  # name, prompt, kind
    assert write_class_list(tmp_path, parse("cat,dog,sky")).read_text().count("\n") == 5  # ours: rewritten
    written.write_text("my notes\n")
    with pytest.raises(BadFile, match="not a class list ovdiff wrote"):
        write_class_list(tmp_path, vocab)
    assert written.read_text() == "my notes\n"


def test_the_look_ahead_takes_prototypes_from_before_kmeans_as_scikit_learns(tmp_path: Path) -> None:
    """A prototype file without settings.kmeans (written before it was recorded) counts as scikit-learn's:
    `run --kmeans sklearn` goes on, `--kmeans torch` is refused ahead, `auto` is left to the stage."""
    from dataclasses import replace

    import torch

    from ovdiff_cli.core.prototypes import Prototypes, Side
    from ovdiff_cli.core.settings import PrototypeSettings
    from ovdiff_cli.errors import BadFile
    from ovdiff_cli.formats import provenance, vocabulary
    from ovdiff_cli.formats.prototypes import write_prototypes
    from ovdiff_cli.stages.run_plan import RunSettings, check_ahead

    work = tmp_path / "w"
    settings = {k: v for k, v in PrototypeSettings().to_meta().items() if k != "kmeans"}
    path = work / "prototypes" / "cat.sd.safetensors"
    path.parent.mkdir(parents=True)
    side = Side(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1, dtype=torch.long), torch.ones(1, 2),
                torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    write_prototypes(path, Prototypes(side, side, {"class": "cat", "extractor": "sd", "settings": settings,
                                                   "models": {"preset": "tiny"}, "inputs": {}}))
    vocab = vocabulary.parse("cat,")

    def ahead(kmeans: str) -> None:
        with provenance.within_run():
            check_ahead(vocab, [], work=work, preset="tiny",
                        settings=RunSettings(extractors=("sd",), prototype=replace(PrototypeSettings(), kmeans=kmeans)))

    ahead("sklearn")
    ahead("auto")
    with pytest.raises(BadFile, match="other settings.kmeans"):
        ahead("torch")
