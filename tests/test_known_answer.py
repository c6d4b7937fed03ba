"""The whole method on a synthetic world with a known answer (tests/synthetic.py): every stage
through the command line, background included, must reach an mIoU of at least 0.9."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ovdiff_cli.cli import main
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.labelmap import write_label_map
from ovdiff_cli.models import registry
from tests import synthetic

VOCAB = ["ruby", "jade", "cobalt"]
SCENES = [["ruby", "cobalt", "jade"], ["jade", "ruby"], ["cobalt"], ["ruby", "jade"]]


@pytest.fixture
def world():
    synthetic.register("synthetic")
    yield
    registry.unregister_preset("synthetic")
    registry.clear_cache()


def ok(runner, *args: str, input: str | None = None) -> list[str]:
    result = runner.invoke(main, list(args), input=input)
    assert result.exit_code == 0, f"ovdiff {' '.join(args)}: {result.output}"
    return result.stdout.split("\n")[:-1]


def test_the_method_segments_a_synthetic_world(runner, world, tmp_path: Path) -> None:
    m = ["--models", "synthetic"]
    support = ok(runner, "sample", *VOCAB, "-n", "8", *m, "-o", str(tmp_path / "support"))
    ok(runner, "attribute", *support)
    ok(runner, "mask", *support, "--proposer", "threshold")
    protos = ok(runner, "prototype", *support, "-x", "hue", *m, "-o", str(tmp_path / "protos"))
    ok(runner, "filter-stuff", *protos, "--vocab", ",".join(VOCAB), "-o", str(tmp_path / "banks"))

    images, gt = [], tmp_path / "gt"
    for k, names in enumerate(SCENES):
        rgb, labels = synthetic.test_image(100 + k, names, VOCAB)
        path = tmp_path / "images" / f"scene{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rgb).save(path)
        write_label_map(gt / f"scene{k}.png", labels)
        images.append(str(path))
    (cands,) = ok(runner, "classify", *images, "--vocab", ",".join(VOCAB), *m, "-o", str(tmp_path / "c.jsonl"))
    # the pre-filter finds exactly the classes of each scene
    assert [sorted(r.active) for r in read_candidates(cands)] == [sorted(s) for s in SCENES]
    ok(runner, "segment", *images, "--bank", str(tmp_path / "banks"), "--candidates", cands, *m,
       "-o", str(tmp_path / "seg"))
    (report,) = ok(runner, "score", str(tmp_path / "seg"), str(gt), "--json")
    d = json.loads(report)
    assert d["classes"] == ["background", *VOCAB]
    print("known-answer IoU per class:", d["iou"], "mIoU", d["mIoU"])
    assert d["mIoU"] >= 0.9, d["iou"]
    assert min(d["iou"]) >= 0.8
