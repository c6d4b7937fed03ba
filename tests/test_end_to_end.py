"""Every stage through the command line on the tiny preset, two classes, each file checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.formats.candidates import read_candidates
from ovdiff_cli.formats.labelmap import read_label_map, write_label_map
from ovdiff_cli.formats.prototypes import read_bank, read_prototypes
from ovdiff_cli.formats.provenance import ovdiff_schema
from ovdiff_cli.formats.supportset import SupportSet
from ovdiff_cli.stages.info import describe


def ok(runner, *args: str, input: str | None = None) -> list[str]:
    result = runner.invoke(main, list(args), input=input)
    assert result.exit_code == 0, f"ovdiff {' '.join(args)}: {result.output}"
    return result.stdout.split("\n")[:-1]


def test_sample_to_score(runner, tmp_path: Path) -> None:
    words = ["cat", "potted plant"]
    tiny = ["--models", "tiny"]
    support = ok(runner, "sample", *words, "-n", "3", "--batch-size", "3", "--steps", "2", *tiny,
                 "-o", str(tmp_path / "support"))
    assert support == [str(tmp_path / "support" / s) for s in ("cat", "potted-plant")]
    attribution = ok(runner, "attribute", "-", input="\n".join(support))
    folders = ok(runner, "mask", "-", "--proposer", "threshold", input="\n".join(attribution))
    assert folders == support
    for f in folders:
        d = describe(f, check_values=True)  # every image, mask and tensor file, checked as the stages read them
        assert (d["images"], d["masks"], d["crossattn"], d["attribution"]) == (3, 3, True, True)
    protos = ok(runner, "prototype", *folders, "-x", "sd", "-x", "dino", "-x", "clip", *tiny,
                "-o", str(tmp_path / "protos"))
    assert len(protos) == 6
    for p in protos:
        proto = read_prototypes(p)
        assert proto.class_name in words and proto.meta["models"]["tiny"] is True
    banks = ok(runner, "filter-stuff", *protos, "--vocab", ",".join(words), "-o", str(tmp_path / "banks"))
    assert sorted(Path(b).name for b in banks) == ["bank.clip.safetensors", "bank.dino.safetensors",
                                                   "bank.sd.safetensors"]
    for b in banks:
        assert read_bank(b).vocabulary.names == words

    # test images: the first support image of each class; its ground truth: its foreground mask as the class
    images, gt = [], tmp_path / "gt"
    for label, f in enumerate(folders, 1):
        s = SupportSet(f)
        image = s.image_path(0)
        copy = tmp_path / "images" / f"{Path(f).name}.png"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(image.read_bytes())
        images.append(str(copy))
        mask = s.read_mask(0)[0]
        write_label_map(gt / f"{copy.stem}.png", np.where(mask == 1, label, 0).astype(np.uint8))
    (cands,) = ok(runner, "classify", *images, "--vocab", ",".join(words), *tiny, "-o", str(tmp_path / "c.jsonl"))
    records = read_candidates(cands)
    assert [r.image for r in records] == images and all(set(r.active) <= set(words) for r in records)
    maps = ok(runner, "segment", *images, "--bank", str(tmp_path / "banks"), "--candidates", cands, *tiny,
              "-o", str(tmp_path / "seg"), "--overlay", "--explain")
    assert maps == [str(tmp_path / "seg" / f"{Path(i).stem}.png") for i in images]
    for m, image in zip(maps, images):
        labels = read_label_map(m)
        assert labels.shape == (128, 128) and labels.max() <= 2
        overlay = tmp_path / "seg" / f"{Path(m).stem}.overlay.png"
        # each says what it is, and what it was made from, whatever its name
        digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()
        for path, schema in ((m, "ovdiff.labelmap/1"), (overlay, "ovdiff.overlay/1")):
            found, meta = ovdiff_schema(path)
            assert found == schema and meta["inputs"]["image_sha256"] == digest
    assert all(r.extra["inputs"]["image_sha256"] == hashlib.sha256(Path(r.image).read_bytes()).hexdigest()
               for r in records)
    from ovdiff_cli.formats.segmentation import read_explanation

    e = read_explanation(tmp_path / "seg" / f"{Path(maps[0]).stem}.explain.safetensors")
    assert sorted(e.rows) == ["clip", "dino", "sd"]  # every extractor took part in every decided pixel
    decided = e.rows["sd"] >= 0
    assert decided.any() and all(torch.equal(e.rows[x] >= 0, decided) for x in ("dino", "clip"))
    explained = ok(runner, "explain", maps[0], "--bank", str(tmp_path / "banks"), "--json")
    assert explained and all(json.loads(line)["extractor"] in ("sd", "dino", "clip") for line in explained)
    (report,) = ok(runner, "score", str(tmp_path / "seg"), str(gt), "--json")
    d = json.loads(report)
    assert d["classes"] == ["background", *words] and d["images"] == 2
    assert sum(d["label"]) == 2 * 128 * 128 and 0 <= d["mIoU"] <= 1
