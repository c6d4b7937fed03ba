"""A battery of bad inputs across every command: wrong files, hostile metadata, bad numbers,
missing folders, images in odd modes, truncated and foreign files.

Every case must end the same way: exit 1 (an expected error) or 2 (a usage error), exactly one
non-empty line on stderr starting with ``ovdiff: error:``, nothing on stdout, no traceback, and
the folder it ran in exactly as it was before (no file written, changed or removed; no lock or
temporary file left).

The files the cases start from (a support set, its prototypes, a bank, a photo, its label map, a
ground truth, candidates) are made once per module by the tiny preset through the command line.
Each case runs in a fresh copy of them, as its working folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from ovdiff_cli.cli import main
from ovdiff_cli.formats.images import write_rgb_png
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, write_label_map

TINY = ["--models", "tiny"]


# ---------------------------------------------------------------------------------------------
# the files every case starts from


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """sup/cat (2 images, attribution, masks), protos/cat.dino.safetensors, banks/bank.dino.safetensors,
    photo.png (48 × 32), seg/photo.png (+ .explain.safetensors), gt/photo.png, c.jsonl."""
    root = tmp_path_factory.mktemp("world")
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rgb = np.zeros((32, 48, 3), np.uint8)
        rgb[:, :24] = (200, 30, 30)
        Image.fromarray(rgb).save("photo.png")
        for args in (["sample", "cat", "-n", "2", "--steps", "1", "-o", "sup", *TINY],
                     ["attribute", "sup/cat", *TINY],
                     ["mask", "sup/cat", "--proposer", "threshold", *TINY],
                     ["prototype", "sup/cat", "-x", "dino", "--clusters", "2", "-o", "protos", *TINY],
                     ["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,", "-o", "banks"],
                     ["classify", "photo.png", "--vocab", "cat,", "-o", "c.jsonl", *TINY],
                     ["segment", "photo.png", "--bank", "banks", "--candidates", "c.jsonl", "--explain",
                      "--short-side", "32", "-o", "seg", *TINY]):
            result = runner.invoke(main, args)
            assert result.exit_code == 0, f"ovdiff {' '.join(args)}: {result.output}"
        write_label_map(root / "gt" / "photo.png", (np.arange(48)[None, :].repeat(32, 0) < 24).astype(np.uint8))
    finally:
        os.chdir(cwd)
    return root


# ---------------------------------------------------------------------------------------------
# ways to spoil a file


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def foreign_safetensors(path: Path) -> None:
    """A valid safetensors file that ovdiff did not write (no schema, no provenance)."""
    from safetensors.numpy import save_file

    path.unlink(missing_ok=True)
    save_file({"x": np.zeros((2, 3), np.float32)}, str(path), metadata={"format": "pt"})


def edit_meta(path: Path, **changes) -> None:
    """Rewrite an ovdiff safetensors file with fields of its JSON metadata replaced."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), "np") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["meta"])
    meta.update(changes)
    header["meta"] = json.dumps(meta)
    save_file(tensors, str(path), metadata=header)


def png_with_text(path: Path, text: str, mode: str = "P") -> None:
    """A small PNG whose ``ovdiff`` text chunk is ``text`` (not necessarily valid JSON)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("ovdiff", text)
    im = Image.fromarray(np.zeros((32, 48), np.uint8), mode="L")
    if mode == "P":
        im = im.convert("P")
    im.save(path, pnginfo=info)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width × height (the pixel data is a stub that is never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def text_as(path: Path, text: str = "this is not an image\n") -> None:
    path.write_text(text)


def odd_modes(folder: Path) -> None:
    """Images a camera or an editor may give: CMYK JPEG, 16-bit gray, palette with alpha, 1-bit."""
    folder.mkdir()
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(folder / "gray16.png")
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).convert("P").save(folder / "palette.png", transparency=0)
    Image.new("1", (40, 30), 1).save(folder / "bits.png")


# ---------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    """A command line run in a copy of the world after ``setup`` spoilt it; ``needle`` must be in
    the error line; ``code`` the exit status (1 or 2)."""

    args: list[str]
    code: int
    needle: str = ""
    setup: Callable[[Path], None] | None = None
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def rm(*names: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        for n in names:
            p = d / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return go


def do(fn: Callable[..., None], name: str, *args, **kwargs) -> Callable[[Path], None]:
    return lambda d: fn(d / name, *args, **kwargs)


def user_photos(d: Path) -> None:
    """ws/mug/images/ holds the user's own photos (no ovdiff metadata)."""
    (d / "ws" / "mug" / "images").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(d / "ws" / "mug" / "images" / f"0000{i}.png")


def two_class_prediction(d: Path) -> None:
    from ovdiff_cli.formats.vocabulary import from_words

    write_label_map(d / "pred2" / "photo.png", np.zeros((32, 48), np.uint8),
                    {"schema": LABELMAP_SCHEMA, "vocabulary": from_words(["cat", "dog"]).to_meta()})


def nested_vocabulary(d: Path) -> None:
    write_label_map(d / "pred3" / "photo.png", np.zeros((32, 48), np.uint8),
                    {"schema": LABELMAP_SCHEMA, "vocabulary": [["cat", ["cat"], "thing"]]})


def small_prediction(d: Path) -> None:
    write_label_map(d / "pred4" / "photo.png", np.zeros((16, 24), np.uint8))


def shrink_mask(path: Path) -> None:
    """The mask rewritten at 9 × 7 with its own metadata: a mask of ovdiff's, of the wrong size."""
    from ovdiff_cli.formats.labelmap import read_label_map_meta

    write_label_map(path, np.ones((7, 9), np.uint8), read_label_map_meta(path))


def photo_folder(d: Path) -> None:
    (d / "photos").mkdir()
    shutil.copy(d / "photo.png", d / "photos" / "p.png")


CASES: dict[str, Case] = {
    # sample
    "sample-seed-negative": Case(["sample", "dog", "--seed", "-1", *TINY], 2, "--seed"),
    "sample-seed-2**70": Case(["sample", "dog", "--seed", str(2**70), *TINY], 2, "--seed"),
    "sample-guidance-nan": Case(["sample", "dog", "--guidance", "nan", *TINY], 2, "--guidance"),
    "sample-guidance-inf": Case(["sample", "dog", "--guidance", "inf", *TINY], 2, "--guidance"),
    "sample-zero-images": Case(["sample", "dog", "-n", "0", *TINY], 2, "--num-images"),
    "sample-10**20-images": Case(["sample", "dog", "-n", str(10**20), *TINY], 2, "--num-images"),
    "sample-steps-past-the-noise-levels": Case(["sample", "dog", "--steps", "1001", *TINY], 2, "--steps"),
    "sample-blank-word": Case(["sample", " ", *TINY], 1, "empty"),
    "sample-missing-vocab-file": Case(["sample", "--vocab", "nope/classes.txt", *TINY], 1, "classes.txt"),
    "sample-shard-out-of-range": Case(["sample", "dog", "--shard", "3/2", *TINY], 2, "--shard"),
    "sample-over-user-photos": Case(["sample", "mug", "-o", "ws", "-n", "2", "--steps", "1", "--overwrite", *TINY],
                                    1, "mug", user_photos),
    # attribute
    "attribute-missing-folder": Case(["attribute", "nope", *TINY], 1, "nope"),
    "attribute-not-a-support-set": Case(["attribute", "photos", *TINY], 1, "photos", photo_folder),
    "attribute-truncated-crossattn": Case(["attribute", "sup/cat", "--overwrite", *TINY], 1, "crossattn",
                                          do(truncate, "sup/cat/crossattn.safetensors")),
    "attribute-foreign-crossattn": Case(["attribute", "sup/cat", "--overwrite", *TINY], 1, "crossattn",
                                        do(foreign_safetensors, "sup/cat/crossattn.safetensors")),
    "attribute-layer-out-of-range": Case(["attribute", "sup/cat", "--attn-layers", "3,99", "--overwrite", *TINY], 1,
                                         "--attn-layers"),  # the recording says how many layers there are
    "attribute-layer-negative": Case(["attribute", "sup/cat", "--attn-layers", "-1", *TINY], 2, "--attn-layers"),
    "attribute-empty-path": Case(["attribute", "", *TINY], 1, "empty"),
    # mask
    "mask-without-attribution": Case(["mask", "sup/cat", "--proposer", "threshold", *TINY], 1, "attribution",
                                     rm("sup/cat/attribution.safetensors", "sup/cat/masks")),
    "mask-fallback-nan": Case(["mask", "sup/cat", "--fallback-fg", "nan", *TINY], 2, "--fallback-fg"),
    "mask-fallback-order": Case(["mask", "sup/cat", "--fallback-fg", "0.1", "--fallback-bg", "0.3", *TINY], 2,
                                "--fallback-bg"),
    "mask-unknown-proposer": Case(["mask", "sup/cat", "--proposer", "nosuch", *TINY], 1, "nosuch",
                                  rm("sup/cat/masks")),
    "mask-truncated-attribution": Case(["mask", "sup/cat", "--proposer", "threshold", *TINY], 1, "attribution",
                                       lambda d: (rm("sup/cat/masks")(d),
                                                  truncate(d / "sup/cat/attribution.safetensors"))),
    "mask-overlay-of-a-truncated-image": Case(["mask", "sup/cat", "--proposer", "threshold", "--overlay", *TINY], 1,
                                              "00001.png", lambda d: (rm("sup/cat/masks")(d),
                                                                      truncate(d / "sup/cat/images/00001.png"))),
    # prototype
    "prototype-without-masks": Case(["prototype", "sup/cat", "-x", "dino", "-o", "p2", *TINY], 1, "mask",
                                    rm("sup/cat/masks")),
    "prototype-unknown-extractor": Case(["prototype", "sup/cat", "-x", "nosuch", "-o", "p2", *TINY], 1, "nosuch"),
    "prototype-mask-wrong-size": Case(["prototype", "sup/cat", "-x", "dino", "-o", "p2", *TINY], 1, "sup/cat/masks",
                                      lambda d: shrink_mask(d / "sup/cat/masks/00000.png")),
    "prototype-mask-is-rgb": Case(["prototype", "sup/cat", "-x", "dino", "-o", "p2", *TINY], 1, "00000.png",
                                  lambda d: write_rgb_png(d / "sup/cat/masks/00000.png",
                                                          np.zeros((128, 128, 3), np.uint8))),
    "prototype-zero-clusters": Case(["prototype", "sup/cat", "--clusters", "0", *TINY], 2, "--clusters"),
    "prototype-output-is-a-file": Case(["prototype", "sup/cat", "-x", "dino", "-o", "photo.png", *TINY], 2,
                                       "photo.png"),
    # filter-stuff
    "filter-stuff-threshold-nan": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,",
                                        "--threshold", "nan", "-o", "b2"], 2, "--threshold"),
    "filter-stuff-photo-as-prototypes": Case(["filter-stuff", "photo.png", "--vocab", "cat,", "-o", "b2"], 1,
                                             "photo.png"),
    "filter-stuff-truncated-prototypes": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,",
                                               "-o", "b2"], 1, "cat.dino.safetensors",
                                              do(truncate, "protos/cat.dino.safetensors")),
    "filter-stuff-foreign-safetensors": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,",
                                              "-o", "b2"], 1, "cat.dino.safetensors",
                                             do(foreign_safetensors, "protos/cat.dino.safetensors")),
    "filter-stuff-extractor-climbs-out": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,",
                                               "-o", "b2"], 1, "cat.dino.safetensors",
                                              do(edit_meta, "protos/cat.dino.safetensors",
                                                 extractor="x/../../../OUTSIDE")),
    "filter-stuff-class-not-in-vocab": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "dog,",
                                             "-o", "b2"], 1, "cat"),
    "filter-stuff-bad-kinds": Case(["filter-stuff", "protos/cat.dino.safetensors", "--vocab", "cat,",
                                    "--proto-types", "class,bogus", "-o", "b2"], 1, "--proto-types"),
    # classify
    "classify-missing-image": Case(["classify", "nope.jpg", "--vocab", "cat,", "-o", "c2.jsonl", *TINY], 1,
                                   "nope.jpg"),
    "classify-text-as-jpeg": Case(["classify", "fake.jpg", "--vocab", "cat,", "-o", "c2.jsonl", *TINY], 1,
                                  "fake.jpg", do(text_as, "fake.jpg")),
    "classify-topk-zero": Case(["classify", "photo.png", "--vocab", "cat,", "--clip-topk", "0", *TINY], 2,
                               "--clip-topk"),
    "classify-output-is-a-folder": Case(["classify", "photo.png", "--vocab", "cat,", "-o", "sup", *TINY], 1, "sup"),
    "classify-garbage-earlier-output": Case(["classify", "photo.png", "--vocab", "cat,", "-o", "c.jsonl", *TINY], 1,
                                            "c.jsonl", do(text_as, "c.jsonl", "{not json\n")),
    # segment
    "segment-missing-bank": Case(["segment", "photo.png", "--bank", "nobank", "--no-prefilter", "-o", "s2", *TINY],
                                 1, "nobank"),
    "segment-prototypes-as-bank": Case(["segment", "photo.png", "--bank", "protos/cat.dino.safetensors",
                                        "--no-prefilter", "-o", "s2", *TINY], 1, "cat.dino.safetensors"),
    "segment-truncated-photo": Case(["segment", "photo.png", "--bank", "banks", "--no-prefilter", "-o", "s2", *TINY],
                                    1, "photo.png", do(truncate, "photo.png")),
    "segment-huge-photo": Case(["segment", "huge.png", "--bank", "banks", "--no-prefilter", "-o", "s2", *TINY], 1,
                               "OVDIFF_MAX_PIXELS", do(png_header_only, "huge.png", 20000, 20000)),
    "segment-lowered-pixel-limit": Case(["segment", "photo.png", "--bank", "banks", "--no-prefilter", "-o", "s2",
                                         *TINY], 1, "limit of 1,000", env={"OVDIFF_MAX_PIXELS": "1000"}),
    "segment-score-floor-nan": Case(["segment", "photo.png", "--bank", "banks", "--score-floor", "nan", *TINY], 2,
                                    "--score-floor"),
    "segment-bg-threshold-inf": Case(["segment", "photo.png", "--bank", "banks", "--bg-threshold", "inf", *TINY], 2,
                                     "--bg-threshold"),
    "segment-short-side-huge": Case(["segment", "photo.png", "--bank", "banks", "--short-side", str(10**11), *TINY],
                                    2, "--short-side"),
    "segment-crops-zero": Case(["segment", "photo.png", "--bank", "banks", "--crops", "0", *TINY], 2, "--crops"),
    "segment-into-the-photos-folder": Case(["segment", "photos/p.png", "--bank", "banks", "--no-prefilter",
                                            "-o", "photos", "--overwrite", *TINY], 1, "p.png", photo_folder),
    "segment-garbage-candidates": Case(["segment", "photo.png", "--bank", "banks", "--candidates", "bad.jsonl",
                                        "-o", "s2", *TINY], 1, "bad.jsonl", do(text_as, "bad.jsonl", "[1, 2]\n")),
    "segment-folder-as-image": Case(["segment", "sup", "--bank", "banks", "--no-prefilter", "-o", "s2", *TINY], 1,
                                    "sup"),
    "segment-stdin-missing-file": Case(["segment", "-", "--bank", "banks", "--no-prefilter", "-o", "s2", *TINY], 1,
                                       " photo.png", stdin=" photo.png\n"),
    "segment-odd-modes-over-the-limit": Case(["segment", "odd/cmyk.jpg", "odd/gray16.png", "odd/palette.png",
                                              "odd/bits.png", "--bank", "banks", "--no-prefilter", "-o", "s2", *TINY],
                                             1, "limit of 100", lambda d: odd_modes(d / "odd"),
                                             env={"OVDIFF_MAX_PIXELS": "100"}),
    # score
    "score-empty-predictions": Case(["score", "empty", "gt", "--vocab", "cat,"], 1, "empty",
                                    lambda d: (d / "empty").mkdir()),
    "score-vocab-order": Case(["score", "pred2", "gt", "--vocab", "dog,cat"], 1, "pred2/photo.png",
                              two_class_prediction),
    "score-nested-vocabulary": Case(["score", "pred3", "gt"], 1, "vocabulary", nested_vocabulary),
    "score-rgb-ground-truth": Case(["score", "seg", "rgbgt"], 1, "rgbgt/photo.png",
                                   lambda d: ((d / "rgbgt").mkdir(), shutil.copy(d / "photo.png", d / "rgbgt"))),
    "score-other-size": Case(["score", "pred4", "gt", "--vocab", "cat,"], 1, "pred4/photo.png", small_prediction),
    "score-16-bit-labels-over-255": Case(["score", "seg", "gt16", "--vocab", "cat,"], 1, "gt16/photo.png",
                                         lambda d: ((d / "gt16").mkdir(), Image.fromarray(
                                             np.full((32, 48), 300, np.uint16)).save(d / "gt16/photo.png"))),
    "score-merge-garbage": Case(["score", "--merge", "c.jsonl"], 1, "c.jsonl"),
    "score-one-path": Case(["score", "seg"], 2, "PRED and GT"),
    "score-hostile-text-chunk": Case(["score", "pred5", "gt", "--vocab", "cat,"], 1, "pred5/photo.png",
                                     lambda d: ((d / "pred5").mkdir(), png_with_text(d / "pred5/photo.png", "{bad"))),
    # explain
    "explain-missing-segmentation": Case(["explain", "seg/nope.png", "--bank", "banks"], 1, "nope"),
    "explain-without-explain-file": Case(["explain", "seg/photo.png", "--bank", "banks"], 1, "explain",
                                         rm("seg/photo.explain.safetensors")),
    "explain-at-and-class": Case(["explain", "seg/photo.png", "--bank", "banks", "--at", "1,1", "--class", "cat"], 2,
                                 "--at"),
    "explain-at-not-a-point": Case(["explain", "seg/photo.png", "--bank", "banks", "--at", "1"], 2, "--at"),
    "explain-top-zero": Case(["explain", "seg/photo.png", "--bank", "banks", "--top", "0"], 2, "--top"),
    "explain-class-not-in-vocab": Case(["explain", "seg/photo.png", "--bank", "banks", "--class", "dog", "-o",
                                        "e.png"], 1, "dog"),
    # info
    "info-missing": Case(["info", "nope.safetensors"], 1, "nope.safetensors"),
    "info-truncated": Case(["info", "banks/bank.dino.safetensors"], 1, "bank.dino.safetensors",
                           do(truncate, "banks/bank.dino.safetensors")),
    "info-foreign-safetensors": Case(["info", "x.safetensors"], 1, "x.safetensors",
                                     do(foreign_safetensors, "x.safetensors")),
    "info-png-with-bad-json": Case(["info", "odd.png"], 1, "odd.png", do(png_with_text, "odd.png", "[1, 2")),
    "info-stdin-blank-then-missing": Case(["info", "-"], 1, "nope", stdin="\n \nnope\n"),
    # run
    "run-no-vocab": Case(["run", "photo.png", *TINY], 2, "--vocab"),
    "run-seed-negative": Case(["run", "photo.png", "--vocab", "cat,", "--seed", "-1", *TINY], 2, "--seed"),
    "run-zero-steps": Case(["run", "photo.png", "--vocab", "cat,", "--steps", "0", *TINY], 2, "--steps"),
    "run-missing-image": Case(["run", "nope.png", "--vocab", "cat,", "-o", "w2", "-n", "1", "--steps", "1", *TINY],
                              1, "nope.png"),
    "run-odd-images-and-a-missing-one": Case(["run", "odd/cmyk.jpg", "odd/gray16.png", "odd/palette.png",
                                              "odd/bits.png", "nope.png", "--vocab", "cat,", "-o", "w2", "-n", "1",
                                              "--steps", "1", *TINY], 1, "nope.png", lambda d: odd_modes(d / "odd")),
    "run-truncated-image": Case(["run", "bad.png", "--vocab", "cat,", "-o", "w2", "-n", "1", "--steps", "1", *TINY],
                                1, "bad.png", lambda d: (shutil.copy(d / "photo.png", d / "bad.png"),
                                                         truncate(d / "bad.png"))),
    "run-huge-image": Case(["run", "huge.png", "--vocab", "cat,", "-o", "w2", "-n", "1", "--steps", "1", *TINY],
                           1, "OVDIFF_MAX_PIXELS", do(png_header_only, "huge.png", 20000, 20000)),
    "run-device-index-too-long": Case(["run", "photo.png", "--vocab", "cat,", "--device", "cuda:" + "9" * 20, *TINY],
                                      2, "--device"),
    # sample --from-images
    "sample-from-images-missing-photo": Case(["sample", "mug", "--from-images", "nope.jpg", "-o", "sup2", *TINY], 1,
                                             "nope.jpg"),
    "sample-from-images-text-as-photo": Case(["sample", "mug", "--from-images", "notes.jpg", "-o", "sup2", *TINY],
                                             1, "notes.jpg", do(text_as, "notes.jpg")),
    "sample-from-images-with-steps": Case(["sample", "mug", "--from-images", "photo.png", "--steps", "3", "-o",
                                           "sup2", *TINY], 2, "--steps"),
    "sample-over-the-users-photos": Case(["sample", "mug", "-n", "1", "--steps", "1", "-o", "own", "--overwrite",
                                          *TINY], 1, "own/mug",
                                         lambda d: ((d / "own/mug/images").mkdir(parents=True),
                                                    shutil.copy(d / "photo.png", d / "own/mug/images/00000.png"))),
    # environment and devices
    "segment-lock-timeout-garbage": Case(["segment", "photo.png", "--bank", "banks", "--no-prefilter", "-o", "s2",
                                          *TINY], 1, "OVDIFF_LOCK_TIMEOUT", env={"OVDIFF_LOCK_TIMEOUT": "soon"}),
    "segment-max-pixels-garbage": Case(["segment", "photo.png", "--bank", "banks", "--no-prefilter", "-o", "s2",
                                        *TINY], 1, "OVDIFF_MAX_PIXELS", env={"OVDIFF_MAX_PIXELS": "lots"}),
    "classify-device-bogus": Case(["classify", "photo.png", "--vocab", "cat,", "--device", "gpu0", *TINY], 2,
                                  "--device"),
    "segment-overlay-name-collision": Case(["segment", "photo.png", "photo.overlay.png", "--bank", "banks",
                                            "--no-prefilter", "--overlay", "-o", "s2", *TINY], 1, "photo.overlay.png",
                                           lambda d: shutil.copy(d / "photo.png", d / "photo.overlay.png")),
    # models
    "models-check-unknown-preset": Case(["models", "check", "nosuch"], 1, "nosuch"),
    "models-download-unknown-preset": Case(["models", "download", "nosuch"], 1, "nosuch"),
    "models-unknown-subcommand": Case(["models", "bogus"], 2, "bogus"),
}


# ---------------------------------------------------------------------------------------------
# the check


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (hidden ones too): folders as "dir", files by content."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_the_battery_covers_every_command() -> None:
    from ovdiff_cli.commands import COMMANDS

    assert {c.args[0] for c in CASES.values()} == set(COMMANDS)
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    # The world sits inside the case folder's parent, so an escape above the case folder shows too.
    box = tmp_path / "box"
    work = box / "work"
    shutil.copytree(world, work)
    if case.setup is not None:
        case.setup(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("OVDIFF_LOCK_TIMEOUT", "5")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = tree(box)
    result = CliRunner().invoke(main, case.args, input=case.stdin)
    after = tree(box)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{name}: {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == case.code, f"{name}: exit {result.exit_code}, stderr: {result.stderr!r}"
    assert len(lines) == 1 and lines[0].startswith("ovdiff: error: "), f"{name}: {result.stderr!r}"
    assert case.needle in lines[0], f"{name}: {lines[0]!r} lacks {case.needle!r}"
    assert "Traceback" not in result.stderr and result.stdout == "", f"{name}: stdout {result.stdout!r}"
    assert after == before, f"{name}: files changed: {sorted(set(after.items()) ^ set(before.items()))}"
