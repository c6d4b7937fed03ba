"""`ovdiff info`: one JSON line per valid file; one `ovdiff: error:` line and exit 1 for bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from ovdiff_cli import __version__
from ovdiff_cli.cli import main
from ovdiff_cli.commands import info as info_command
from ovdiff_cli.formats import tensorfile
from ovdiff_cli.formats.candidates import Candidates, write_candidates
from ovdiff_cli.core.attention import CrossAttention
from ovdiff_cli.core.bank import Rows
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.formats.prototypes import PROTOTYPES, Bank, write_bank, write_prototypes
from ovdiff_cli.formats.supportset import ATTRIBUTION, SupportSet
from ovdiff_cli.formats.vocabulary import from_words
from tests.helpers import PROVENANCE

D = 4


def prototypes() -> Prototypes:
    g = torch.Generator().manual_seed(0)
    fg = Side(torch.randn(1, D, generator=g), torch.randn(2, D, generator=g), torch.tensor([0, 3]),
              torch.randn(3, D, generator=g), torch.tensor([[0, 1, 2], [1, 0, 0]]), torch.tensor([2, 0]))
    return Prototypes(fg, Side.empty(D), {**PROVENANCE, "class": "cat", "extractor": "dino", "clusters": 3})


def bank() -> Bank:
    v = torch.eye(D)[:3]
    side = Rows(v, torch.tensor([1, 2, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]))
    empty = Rows(torch.zeros(0, D), *(torch.zeros(0, dtype=torch.int64) for _ in range(3)))
    return Bank(side, empty, from_words(["cat", "sky"]), {**PROVENANCE, "extractor": "dino"})


#: Metadata of a valid cross-attention file and of a valid attribution file.
CA_META = {**PROVENANCE, "class": "cat", "prompt": "a good picture of a cat", "steps": 30}
ATT_META = {**PROVENANCE, "class": "cat"}


def invoke(*paths: Path | str, check_values: bool = False):
    return CliRunner().invoke(main, ["info", *map(str, paths), *(["--check-values"] if check_values else [])])


def check_ok(result, lines: int) -> list[dict]:
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""
    out = result.stdout.splitlines()
    assert len(out) == lines, result.stdout
    return [json.loads(line) for line in out]


def check_error(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    for text in (result.stdout, result.stderr, result.output):
        assert "Traceback" not in text
    err = result.stderr.splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("ovdiff: error: ")
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


# ---------------------------------------------------------------------------------------------
# valid files


def test_info_prototypes(tmp_path: Path):
    path = tmp_path / "cat.dino.safetensors"
    write_prototypes(path, prototypes())
    (obj,) = check_ok(invoke(path), 1)
    assert obj["schema"] == "ovdiff.prototypes/1"
    assert obj["path"] == str(path) and obj["kind"] == "tensors"
    assert obj["made_by"] == "ovdiff prototype"
    assert obj["written_by"] == f"ovdiff {__version__}"
    assert obj["meta"] == {**PROVENANCE, "class": "cat", "extractor": "dino", "clusters": 3}
    assert obj["tensors"] == {
        "fg.class": [1, D], "fg.instance": [2, D], "fg.instance_image": [2], "fg.part": [3, D],
        "fg.pooled_index": [2, 3], "fg.pooled_label": [2],
        "bg.class": [0, D], "bg.instance": [0, D], "bg.instance_image": [0], "bg.part": [0, D],
        "bg.pooled_index": [0, 3], "bg.pooled_label": [0]}


def test_info_bank(tmp_path: Path):
    path = tmp_path / "bank.dino.safetensors"
    write_bank(path, bank())
    (obj,) = check_ok(invoke(path), 1)
    assert obj["schema"] == "ovdiff.bank/1" and obj["made_by"] == "ovdiff filter-stuff"
    vocabulary = {"name": "words", "classes": [["cat", "cat", "thing"], ["sky", "sky", "stuff"]]}
    assert obj["meta"] == {**PROVENANCE, "extractor": "dino", "vocabulary": vocabulary}
    assert obj["tensors"]["fg"] == [3, D] and obj["tensors"]["bg"] == [0, D]


def test_info_support_set_and_its_files(tmp_path: Path):
    s = SupportSet(tmp_path / "cat")
    s.write_image(0, np.zeros((4, 4, 3), dtype=np.uint8), {"class": "cat", "seed": 42})
    s.write_image(1, np.ones((4, 4, 3), dtype=np.uint8), {"class": "cat", "seed": 42})
    s.write_mask(0, np.zeros((4, 4), dtype=np.uint8), {"mode": "cutler"})
    s.write_crossattn(CrossAttention(torch.zeros(2, 1, 1, 2, 2), torch.ones(2, 1, dtype=torch.int64),
                                     torch.tensor([6]), torch.tensor([6]), ("cat</w>",), ("mid",), CA_META))
    folder, ca, img, mask = check_ok(invoke(s.path, s.crossattn_path, s.image_path(1), s.mask_path(0)), 4)
    assert folder == {"path": str(s.path), "kind": "support-set", "images": 2, "crossattn": True,
                      "attribution": False, "masks": 1,
                      "meta": {"schema": "ovdiff.support-image/1", "class": "cat", "seed": 42}}
    assert ca["schema"] == "ovdiff.crossattn/1" and ca["tensors"]["attn"] == [2, 1, 1, 2, 2]
    assert ca["meta"] == {**CA_META, "tokens": ["cat</w>"], "layers": ["mid"]}
    assert img == {"path": str(s.image_path(1)), "kind": "image", "mode": "RGB", "size": [4, 4],
                   "meta": {"schema": "ovdiff.support-image/1", "class": "cat", "seed": 42}}
    assert mask["mode"] == "P" and mask["meta"] == {"schema": "ovdiff.mask/1", "mode": "cutler"}


def test_info_candidates(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    write_candidates(path, [Candidates("a.jpg", {"cat": 1.0}, ["cat"], ["cat"], 0.3, ["cat"]),
                            Candidates("b.jpg", {"cat": 1.0}, ["cat"], ["cat"], 0.3, ["cat"])])
    (obj,) = check_ok(invoke(path), 1)
    assert obj == {"path": str(path), "kind": "candidates", "images": 2}


# ---------------------------------------------------------------------------------------------
# bad files


def test_info_truncated(tmp_path: Path):
    path = tmp_path / "cat.dino.safetensors"
    write_prototypes(path, prototypes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    check_error(invoke(path), str(path), "truncated")


def test_info_foreign_schema(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"schema": "someone.else/1"})
    check_error(invoke(path), str(path), "not an ovdiff file", "someone.else/1", "ovdiff.prototypes/1")


def test_info_plain_safetensors(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    check_error(invoke(path), str(path), "not an ovdiff file")


def test_info_missing(tmp_path: Path):
    path = tmp_path / "nope.dino.safetensors"
    check_error(invoke(path), str(path), "does not exist")


def test_info_newer_version(tmp_path: Path):
    path = tmp_path / "cat.dino.safetensors"
    write_prototypes(path, prototypes())
    with safe_open(str(path), framework="pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
    save_file(tensors, str(path), metadata={"schema": "ovdiff.prototypes/2", "meta": "{}"})
    check_error(invoke(path), str(path), "ovdiff.prototypes/2", "newer")


def test_info_semantic_check_of_prototypes(tmp_path: Path):
    p = prototypes()
    nan_part = p.fg.part.clone()
    nan_part[0, 0] = float("nan")
    path = tmp_path / "cat.dino.safetensors"
    tensors = {"fg.class": p.fg.class_proto, "fg.instance": p.fg.instance, "fg.instance_image": p.fg.instance_image,
               "fg.part": nan_part, "fg.pooled_index": p.fg.pooled_index, "fg.pooled_label": p.fg.pooled_label}
    tensors.update({k.replace("fg.", "bg."): v[:0] for k, v in tensors.items()})
    tensorfile.write(path, PROTOTYPES, tensors, p.meta)
    assert check_ok(invoke(path), 1)[0]["tensors"]["fg.part"] == [3, D]  # the header is sound
    check_error(invoke(path, check_values=True), str(path), "non-finite fg part")


def test_info_attribution_range_in_support_set(tmp_path: Path):
    s = SupportSet(tmp_path)
    tensorfile.write(s.attribution_path, ATTRIBUTION,
                     {"attribution": torch.full((1, 4, 4), 2.0), "attribution64": torch.zeros(1, 2, 2)}, ATT_META)
    check_error(invoke(s.attribution_path, check_values=True), str(s.attribution_path), "outside [0, 1]")


def test_info_attribution_range_when_renamed(tmp_path: Path):
    """A copied or renamed attribution file gets the same [0, 1] check as one inside a support set."""
    path = tmp_path / "cat-attribution.safetensors"
    # The writer refuses such values, so write the file below the semantic checks.
    tensorfile.write(path, ATTRIBUTION, {"attribution": torch.full((1, 4, 4), 2.0),
                                         "attribution64": torch.zeros(1, 2, 2)}, ATT_META)
    check_error(invoke(path, check_values=True), str(path), "outside [0, 1]")


def test_info_file_without_provenance(tmp_path: Path):
    """A prototype file that lacks the models and inputs its schema requires is a bad file, not a crash."""
    path = tmp_path / "cat.dino.safetensors"
    write_prototypes(path, prototypes())
    with safe_open(str(path), framework="pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
        header = dict(h.metadata())
    meta = json.loads(header["meta"])
    del meta["models"], meta["inputs"]
    save_file(tensors, str(path), metadata={**header, "meta": json.dumps(meta)})
    check_error(invoke(path), str(path), "lacks the metadata models, inputs that ovdiff.prototypes/1 requires",
                "ovdiff prototype")


def test_info_attribution_without_class(tmp_path: Path):
    path = tmp_path / "attribution.safetensors"
    save_file({"attribution": torch.zeros(1, 4, 4), "attribution64": torch.zeros(1, 2, 2)}, str(path),
              metadata={"schema": "ovdiff.attribution/1", "meta": json.dumps(PROVENANCE)})
    check_error(invoke(path), str(path), "lacks the metadata class that ovdiff.attribution/1 requires",
                "ovdiff attribute")


def test_info_bad_candidates_line(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"image": "a"}\n', encoding="utf-8")
    check_error(invoke(path), str(path), "line 1", "lacks")


def test_info_unknown_kind_and_empty_folder(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    check_error(invoke(path), str(path), "unknown kind")
    folder = tmp_path / "empty"
    folder.mkdir()
    check_error(invoke(folder), str(folder), "not a support-set folder")


def test_info_stops_at_first_bad_file(tmp_path: Path):
    good = tmp_path / "cat.dino.safetensors"
    write_prototypes(good, prototypes())
    missing = tmp_path / "missing.safetensors"
    result = invoke(good, missing, good)
    check_error(result, str(missing), "does not exist")
    out = result.stdout.splitlines()
    assert len(out) == 1 and json.loads(out[0])["schema"] == "ovdiff.prototypes/1"


def test_info_needs_a_path():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 2 and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# reading headers: no torch, and the bytes the header promises


def test_info_reads_a_header_without_importing_torch(tmp_path: Path):
    """`ovdiff info FILE` parses the safetensors header itself: importing torch alone takes seconds."""
    path = tmp_path / "bank.dino.safetensors"
    write_bank(path, bank())
    code = ("import json, sys\n"
            "from ovdiff_cli.cli import main\n"
            "try:\n    main(['info', sys.argv[1]])\n"
            "except SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'safetensors', 'numpy') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.splitlines()
    assert json.loads(out[-1]) == []
    (obj,) = map(json.loads, out[:-1])
    assert obj["schema"] == "ovdiff.bank/1" and obj["tensors"]["fg"] == [3, D] and obj["tensors"]["bg"] == [0, D]


def test_info_indents_json_for_a_terminal_and_keeps_one_line_for_a_pipe(tmp_path: Path, monkeypatch):
    path = tmp_path / "bank.dino.safetensors"
    write_bank(path, bank())
    (piped,) = check_ok(invoke(path), 1)  # CliRunner's stdout is not a terminal
    monkeypatch.setattr(info_command, "_stdout_is_terminal", lambda: True)
    result = invoke(path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == piped
    lines = result.stdout.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[1] == f'  "path": {json.dumps(str(path))},'
    # Shapes and other lists of plain values stay on one line; a list of lists has one per line.
    assert f'    "fg": [3, {D}],' in lines and '    "bg_owner": [0],' in lines
    assert lines[lines.index('      "classes": [') + 1] == '        ["cat", "cat", "thing"],'


def test_info_reports_missing_and_extra_tensor_bytes(tmp_path: Path):
    path = tmp_path / "bank.dino.safetensors"
    write_bank(path, bank())
    data = path.read_bytes()
    # The bank's tensors: fg [3, 4] float32, three [3] int64, bg [0, 4] and three [0]: 48 + 3 * 24 bytes.
    promised = 3 * D * 4 + 3 * 3 * 8
    path.write_bytes(data[:-5])
    check_error(invoke(path), str(path), f"is truncated: its header promises {promised} bytes of tensor data, "
                                         f"it holds {promised - 5}")
    path.write_bytes(data + b"\0\0")
    check_error(invoke(path), str(path), f"has trailing bytes: its header promises {promised} bytes")


def test_info_checks_shapes_from_the_header(tmp_path: Path):
    """A tensor whose shape breaks the schema is found without loading any tensor."""
    path = tmp_path / "bank.dino.safetensors"
    b = bank()
    save_file({"fg": b.fg.vectors, "fg_owner": torch.tensor([1, 2]), "fg_kind": b.fg.kind, "fg_index": b.fg.index,
               "bg": b.bg.vectors, "bg_owner": b.bg.owner, "bg_kind": b.bg.kind, "bg_index": b.bg.index},
              str(path), metadata={"schema": "ovdiff.bank/1", "meta": json.dumps({**PROVENANCE, "extractor": "dino",
                                                                                   "vocabulary": {}})})
    check_error(invoke(path), str(path), "tensor 'fg_owner' has MFG=2 but another tensor has MFG=3",
                "ovdiff filter-stuff")
