"""Self-describing safetensors files: generic I/O, atomic writes, cross-attention, attribution,
prototypes and banks. Tensors are compared exactly; every bad input must give a one-line BadFile
naming the file (readers) or a ValueError and no file (writers)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ovdiff_cli import __version__
from ovdiff_cli.core.attention import AttentionBatch, Attribution, CrossAttention
from ovdiff_cli.core.bank import Rows
from ovdiff_cli.core.masks import SetProposals
from ovdiff_cli.core.prototypes import Prototypes, Side
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import atomic, tensorfile
from ovdiff_cli.formats.prototypes import (
    BANK, PROTOTYPES, Bank, bank_path, prototype_path, read_bank, read_prototypes, write_bank, write_prototypes)
from ovdiff_cli.formats.supportset import ATTRIBUTION, CROSSATTN, PROPOSALS, SupportSet
from ovdiff_cli.formats.tensorfile import Schema, TensorSpec
from ovdiff_cli.formats.vocabulary import build, from_words
from tests.helpers import PROVENANCE, one_line_with


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def raw_header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# generic tensor files

THING = Schema("test.thing", 2, "ovdiff make-thing", {
    "a": TensorSpec("float32", ("N", 3)),
    "b": TensorSpec("int64", ("N",)),
    "c": TensorSpec("uint8", ("K", "N")),
    "d": TensorSpec("bool", (2,), optional=True),
})


def thing_tensors() -> dict[str, torch.Tensor]:
    return {"a": torch.randn(4, 3, generator=gen(1)), "b": torch.tensor([5, -1, 0, 2**40]),
            "c": torch.tensor([[0, 1, 2, 255], [9, 8, 7, 6]], dtype=torch.uint8)}


def write_raw(path: Path, tensors: dict[str, torch.Tensor], schema: str | None, meta: str | None = "{}") -> Path:
    header = {}
    if schema is not None:
        header["schema"] = schema
        header["ovdiff"] = "0.0-test"
    if meta is not None:
        header["meta"] = meta
    save_file(tensors, str(path), metadata=header or None)
    return path


def test_round_trip(tmp_path: Path):
    t = thing_tensors()
    meta = {"class": "hot dog", "models": {"sd": "v1.5"}, "inputs": ["x"], "ß": "ü"}
    path = tmp_path / "out" / "thing.safetensors"  # the folder is created
    assert tensorfile.write(path, THING, t, meta) == path
    f = tensorfile.read(path, THING)
    assert f.path == path
    assert set(f.tensors) == {"a", "b", "c"}
    for k, v in t.items():
        assert f.tensors[k].dtype == v.dtype and torch.equal(f.tensors[k], v)
    assert f.meta == meta
    assert f.dims == {"N": 4, "K": 2}
    assert f.shapes == {"a": (4, 3), "b": (4,), "c": (2, 4)}
    assert f.writer_version == __version__
    header = raw_header(path)
    assert header["schema"] == "test.thing/2"
    assert header["ovdiff"] == __version__
    assert header["meta"] == json.dumps(meta, sort_keys=True, ensure_ascii=False)
    assert listing(path.parent) == ["thing.safetensors"]


def test_optional_tensor_and_lazy_read(tmp_path: Path):
    t = {**thing_tensors(), "d": torch.tensor([True, False])}
    p = tensorfile.write(tmp_path / "t.safetensors", THING, t, {})
    f = tensorfile.read(p, THING)
    assert torch.equal(f.tensors["d"], torch.tensor([True, False]))
    lazy = tensorfile.read(p, THING, load=False)
    assert lazy.tensors == {} and lazy.dims == {"N": 4, "K": 2} and lazy.meta == {}


def test_non_contiguous_and_grad_tensors(tmp_path: Path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_(True)
    a = base[:, :3]  # a non-contiguous view that requires grad
    assert not a.is_contiguous()
    t = {"a": a, "b": torch.arange(3), "c": torch.zeros(1, 3, dtype=torch.uint8)}
    p = tensorfile.write(tmp_path / "t.safetensors", THING, t, {})
    back = tensorfile.read(p, THING).tensors["a"]
    assert torch.equal(back, torch.tensor([[0.0, 1, 2], [4, 5, 6], [8, 9, 10]]))


def test_tensors_sharing_storage(tmp_path: Path):
    flat = torch.arange(12, dtype=torch.float32)
    ints = torch.arange(10, dtype=torch.int64)
    t = {"a": flat.view(4, 3), "b": ints[:4], "c": torch.zeros(2, 4, dtype=torch.uint8)}  # b views a larger storage
    t2 = {"a": flat[:6].view(2, 3), "b": ints[:2], "c": torch.ones(2, 2, dtype=torch.uint8)}
    p = tensorfile.write(tmp_path / "t.safetensors", THING, t, {})
    back = tensorfile.read(p, THING).tensors
    assert torch.equal(back["a"], flat.view(4, 3)) and back["b"].tolist() == [0, 1, 2, 3]
    p2 = tensorfile.write(tmp_path / "t2.safetensors", THING, t2, {})
    back2 = tensorfile.read(p2, THING).tensors
    assert back2["a"].tolist() == [[0.0, 1, 2], [3, 4, 5]] and back2["b"].tolist() == [0, 1]
    # two tensors of one storage
    two = Schema("test.two", 1, "x", {"p": TensorSpec("float32", ("N",)), "q": TensorSpec("float32", ("N",))})
    base = torch.arange(8, dtype=torch.float32)
    p3 = tensorfile.write(tmp_path / "t3.safetensors", two, {"p": base[:4], "q": base[4:]}, {})
    back3 = tensorfile.read(p3, two).tensors
    assert back3["p"].tolist() == [0, 1, 2, 3] and back3["q"].tolist() == [4, 5, 6, 7]
    p4 = tensorfile.write(tmp_path / "t4.safetensors", two, {"p": base, "q": base}, {})
    back4 = tensorfile.read(p4, two).tensors
    assert torch.equal(back4["p"], base) and torch.equal(back4["q"], base)


@pytest.mark.parametrize("change, needle", [
    (lambda t: t.update(a=t["a"].double()), "float64"),
    (lambda t: t.update(a=torch.zeros(4, 2)), "shape"),
    (lambda t: t.update(a=torch.zeros(4, 3, 1)), "shape"),
    (lambda t: t.update(b=torch.zeros(5, dtype=torch.int64)), "N=5"),
    (lambda t: t.pop("c"), "'c'"),
    (lambda t: t.update(zzz=torch.zeros(1)), "zzz"),
    (lambda t: t.update(d=torch.zeros(3, dtype=torch.bool)), "shape"),
], ids=["dtype", "fixed-dim", "ndim", "symbol", "missing", "unexpected", "optional-shape"])
def test_writer_refuses_bad_tensors(tmp_path: Path, change, needle):
    t = thing_tensors()
    change(t)
    path = tmp_path / "t.safetensors"
    with pytest.raises(ValueError) as e:
        tensorfile.write(path, THING, t, {})
    assert "refusing to write" in str(e.value) and str(path) in str(e.value) and needle in str(e.value)
    assert listing(tmp_path) == []


def test_writer_refuses_nan_in_meta(tmp_path: Path):
    with pytest.raises(ValueError):
        tensorfile.write(tmp_path / "t.safetensors", THING, thing_tensors(), {"x": float("inf")})
    assert listing(tmp_path) == []


def test_writer_replaces_existing_file(tmp_path: Path):
    p = tmp_path / "t.safetensors"
    tensorfile.write(p, THING, thing_tensors(), {"v": 1})
    t2 = thing_tensors()
    t2["b"] = torch.tensor([1, 2, 3, 4])
    tensorfile.write(p, THING, t2, {"v": 2})
    f = tensorfile.read(p, THING)
    assert f.meta == {"v": 2} and f.tensors["b"].tolist() == [1, 2, 3, 4]
    assert listing(tmp_path) == ["t.safetensors"]


def test_equal_inputs_give_equal_bytes(tmp_path: Path):
    digests = set()
    for i in range(20):
        p = tensorfile.write(tmp_path / f"t{i}.safetensors", THING, thing_tensors(), {"b": 1, "a": 2})
        digests.add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert len(digests) == 1


# --- reading bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, parts", [
    ("nope.safetensors", ["does not exist", "ovdiff make-thing"]),
    (".", ["folder", "test.thing/2"]),
], ids=["missing", "folder"])
def test_read_missing_and_folder(tmp_path: Path, name: str, parts: list[str]):
    path = tmp_path if name == "." else tmp_path / name
    with pytest.raises(BadFile) as e:
        tensorfile.read(path, THING)
    one_line_with(e.value, str(path), *parts)


@pytest.mark.parametrize("cut", [0, 5, 8, 30, 0.5, -1], ids=["empty", "5B", "8B", "30B", "half", "last-byte"])
def test_read_truncated(tmp_path: Path, cut):
    p = tensorfile.write(tmp_path / "t.safetensors", THING, thing_tensors(), {"x": 1})
    data = p.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    p.write_bytes(data[:n])
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), "truncated", "ovdiff make-thing")


def _zeros_file(tmp_path: Path) -> Path:
    g = tmp_path / "g.safetensors"
    g.write_bytes(b"\x00" * 64)
    return g


def _junk_after_a_good_file(tmp_path: Path) -> Path:
    p = tensorfile.write(tmp_path / "t.safetensors", THING, thing_tensors(), {})
    p.write_bytes(p.read_bytes() + b"junk")
    return p


@pytest.mark.parametrize("make", [_zeros_file, _junk_after_a_good_file], ids=["garbage", "trailing-bytes"])
def test_read_garbage_and_trailing_bytes(tmp_path: Path, make):
    p = make(tmp_path)
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), "not a readable safetensors file")


def test_read_plain_safetensors_without_schema(tmp_path: Path):
    p = write_raw(tmp_path / "plain.safetensors", thing_tensors(), None, None)
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), "not an ovdiff file", "test.thing/2", "ovdiff make-thing")


@pytest.mark.parametrize("schema, needles", [
    ("other.kind/2", ["is a other.kind/2 file", "expected test.thing/2"]),
    ("test.thing/3", ["newer", "test.thing/3", "upgrade"]),
    ("test.thing/x", ["test.thing/x"]),
    ("test.thing/1", ["old schema", "test.thing/1", "ovdiff make-thing"]),
])
def test_read_wrong_schema_or_version(tmp_path: Path, schema, needles):
    p = write_raw(tmp_path / "t.safetensors", thing_tensors(), schema)
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), *needles)


@pytest.mark.parametrize("meta, needle", [("{not json", "invalid JSON"), ("[1, 2]", "not a JSON object")])
def test_read_bad_meta(tmp_path: Path, meta, needle):
    p = write_raw(tmp_path / "t.safetensors", thing_tensors(), "test.thing/2", meta)
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), needle)


def test_read_without_meta_is_empty_meta(tmp_path: Path):
    p = write_raw(tmp_path / "t.safetensors", thing_tensors(), "test.thing/2", None)
    f = tensorfile.read(p, THING)
    assert f.meta == {} and f.writer_version == "0.0-test"


@pytest.mark.parametrize("change, needles", [
    (lambda t: t.update(a=t["a"].double()), ["'a'", "float64", "float32"]),
    (lambda t: t.update(a=t["a"].to(torch.bfloat16)), ["'a'", "bfloat16", "float32"]),
    (lambda t: t.update(b=t["b"].to(torch.int32)), ["'b'", "int32", "int64"]),
    (lambda t: t.update(a=torch.zeros(4, 5)), ["'a'", "[4, 5]", "[\'N\', 3]"]),
    (lambda t: t.update(a=torch.zeros(4)), ["'a'", "[4]", "2 dimensions"]),
    (lambda t: t.update(b=torch.zeros(7, dtype=torch.int64)), ["'b'", "N=7", "N=4"]),
    (lambda t: t.pop("b"), ["lacks", "'b'", "test.thing/2"]),
    (lambda t: t.update(extra=torch.zeros(1)), ["unexpected", "extra"]),
], ids=["float64", "bfloat16", "int32", "fixed-dim", "ndim", "symbol", "missing", "unexpected"])
def test_read_bad_tensors(tmp_path: Path, change, needles):
    t = thing_tensors()
    change(t)
    p = write_raw(tmp_path / "t.safetensors", t, "test.thing/2")
    with pytest.raises(BadFile) as e:
        tensorfile.read(p, THING)
    one_line_with(e.value, str(p), "ovdiff make-thing", *needles)
    with pytest.raises(BadFile):  # the lazy check sees it too
        tensorfile.read(p, THING, load=False)


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_open_exception_leaves_nothing(tmp_path: Path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_atomic_open_exception_keeps_old_file(tmp_path: Path):
    target = tmp_path / "out.bin"
    atomic.write_bytes(target, b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_open(target, "wb") as f:
            f.write(b"new, half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["out.bin"]


def test_atomic_writes_and_temp_names(tmp_path: Path):
    target = tmp_path / "a" / "b" / "t.txt"
    with atomic.atomic_open(target, "w") as f:
        f.write("héllo\n")
        tmp_files = listing(target.parent)
        assert len(tmp_files) == 1 and tmp_files[0].startswith(".t.txt.") and tmp_files[0].endswith(".tmp")
        assert not target.exists()
    assert target.read_bytes() == "héllo\n".encode("utf-8")
    atomic.write_text(target, "x")
    assert target.read_text(encoding="utf-8") == "x"
    assert listing(target.parent) == ["t.txt"]


def test_atomic_open_rejects_read_modes(tmp_path: Path):
    for mode in ("r", "a", "rb+"):
        with pytest.raises(ValueError):
            with atomic.atomic_open(tmp_path / "x", mode):
                pass
    assert listing(tmp_path) == []


def test_parent_is_a_regular_file(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    for target in (blocker / "out.txt", blocker / "deeper" / "out.txt"):
        with pytest.raises(BadFile) as e:
            atomic.write_text(target, "x")
        one_line_with(e.value, str(blocker), "cannot write")
    with pytest.raises(BadFile):
        tensorfile.write(blocker / "t.safetensors", THING, thing_tensors(), {})
    assert blocker.read_text() == "I am a file"
    assert listing(tmp_path) == ["file"]


def test_file_sha256(tmp_path: Path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert atomic.file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    data = bytes(range(256)) * 9000  # > 1 MiB, several blocks
    big.write_bytes(data)
    assert atomic.file_sha256(big) == hashlib.sha256(data).hexdigest()
    with pytest.raises(BadFile) as e:
        atomic.file_sha256(tmp_path / "none")
    one_line_with(e.value, str(tmp_path / "none"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_files_follow_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "t.txt", "x")
        # safetensors recreates the file it writes, owner-only; the atomic writer still gives 0644
        with atomic.atomic_path(tmp_path / "t.safetensors") as tmp:
            save_file({"x": torch.zeros(1)}, str(tmp))
    finally:
        os.umask(old)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# cross-attention


def make_crossattn(n=2, layers=3, tokens=2, grid=4) -> CrossAttention:
    attn = torch.rand(n, layers, tokens, grid, grid, generator=gen(2)) * 10
    return CrossAttention(
        attn=attn, counts=torch.full((n, layers), 240, dtype=torch.int64),
        positions=torch.arange(6, 6 + tokens), phrase_positions=torch.arange(6, 6 + tokens),
        tokens=tuple(f"tok{i}</w>" for i in range(tokens)), layers=tuple(f"layer{i}" for i in range(layers)),
        meta={**PROVENANCE, "class": "pottedplant", "prompt": "a good picture of a potted plant", "steps": 30})


#: The least metadata a cross-attention file must carry (ovdiff.crossattn/1).
CA_META = {**PROVENANCE, "class": "cat", "prompt": "a good picture of a cat"}


def test_crossattn_round_trip(tmp_path: Path):
    rec = make_crossattn()
    s = SupportSet(tmp_path / "cat")
    assert s.write_crossattn(rec) == tmp_path / "cat" / "crossattn.safetensors"
    back = s.read_crossattn()
    for name in ("attn", "counts", "positions", "phrase_positions"):
        assert torch.equal(getattr(back, name), getattr(rec, name)), name
    assert back.tokens == ("tok0</w>", "tok1</w>")
    assert back.layers == ("layer0", "layer1", "layer2")
    assert back.meta == rec.meta
    f = tensorfile.read(s.crossattn_path, CROSSATTN)
    assert f.dims == {"N": 2, "L": 3, "T": 2, "G": 4, "P": 2}
    assert f.meta["tokens"] == ["tok0</w>", "tok1</w>"]


def test_crossattn_phrase_subset(tmp_path: Path):
    rec = make_crossattn(tokens=3)
    rec = CrossAttention(rec.attn, rec.counts, torch.tensor([0, 6, 76]), torch.tensor([76]), rec.tokens,
                         rec.layers, CA_META)
    s = SupportSet(tmp_path)
    s.write_crossattn(rec)
    back = s.read_crossattn()
    assert back.positions.tolist() == [0, 6, 76] and back.phrase_positions.tolist() == [76] and back.meta == CA_META


def _replace(rec: CrossAttention, **kw) -> CrossAttention:
    fields = dict(attn=rec.attn, counts=rec.counts, positions=rec.positions, phrase_positions=rec.phrase_positions,
                  tokens=rec.tokens, layers=rec.layers, meta=rec.meta)
    fields.update(kw)
    return CrossAttention(**fields)


@pytest.mark.parametrize("kw, needle", [
    ({"tokens": ("a",)}, "1 token names for 2 positions"),
    ({"layers": ("a", "b")}, "2 layer names for 3 layers"),
    ({"positions": torch.tensor([6, 77]), "phrase_positions": torch.tensor([6])}, "outside 0..76"),
    ({"positions": torch.tensor([-1, 6]), "phrase_positions": torch.tensor([6])}, "outside 0..76"),
    ({"phrase_positions": torch.tensor([5])}, "not recorded"),
    ({"attn": torch.full((2, 3, 2, 4, 4), float("nan"))}, "non-finite"),
    ({"attn": torch.zeros(2, 3, 2, 4, 4, dtype=torch.float64)}, "float64"),
    ({"counts": torch.zeros(3, 3, dtype=torch.int64)}, "N=3"),
    ({"attn": torch.zeros(2, 3, 2, 4, 5)}, "G=5"),
], ids=["tokens", "layers", "pos-77", "pos-neg", "phrase", "nan", "dtype", "symbol-N", "symbol-G"])
def test_crossattn_writer_refuses(tmp_path: Path, kw, needle):
    s = SupportSet(tmp_path)
    with pytest.raises(ValueError) as e:
        s.write_crossattn(_replace(make_crossattn(), **kw))
    assert needle in str(e.value) and "refusing to write" in str(e.value)
    assert not s.crossattn_path.exists()
    assert listing(tmp_path) == []


def _crossattn_tensors(rec: CrossAttention) -> dict[str, torch.Tensor]:
    return {"attn": rec.attn, "counts": rec.counts, "positions": rec.positions,
            "phrase_positions": rec.phrase_positions}


def test_crossattn_reader_checks_names_and_positions(tmp_path: Path):
    s = SupportSet(tmp_path)
    rec = make_crossattn()
    tensorfile.write(s.crossattn_path, CROSSATTN, _crossattn_tensors(rec), {**CA_META, "layers": ["a", "b", "c"]})
    with pytest.raises(BadFile) as e:
        s.read_crossattn()
    one_line_with(e.value, str(s.crossattn_path), "token or layer names", "ovdiff sample")
    bad = _replace(rec, positions=torch.tensor([6, 80]))
    tensorfile.write(s.crossattn_path, CROSSATTN, _crossattn_tensors(bad),
                     {**CA_META, "tokens": ["a", "b"], "layers": ["a", "b", "c"]})
    with pytest.raises(BadFile) as e:
        s.read_crossattn()
    one_line_with(e.value, str(s.crossattn_path), "outside 0..76", "phrase positions that were not recorded")


def test_crossattn_reader_inconsistent_dims_and_dtype(tmp_path: Path):
    s = SupportSet(tmp_path)
    rec = make_crossattn()
    t = _crossattn_tensors(rec)
    t["counts"] = torch.zeros(3, 3, dtype=torch.int64)
    write_raw(s.crossattn_path, t, "ovdiff.crossattn/1",
              json.dumps({**CA_META, "tokens": ["a", "b"], "layers": ["a", "b", "c"]}))
    with pytest.raises(BadFile) as e:
        s.read_crossattn()
    one_line_with(e.value, str(s.crossattn_path), "'counts'", "N=3", "N=2", "ovdiff sample")
    t = _crossattn_tensors(rec)
    t["counts"] = t["counts"].to(torch.float32)
    write_raw(s.crossattn_path, t, "ovdiff.crossattn/1",
              json.dumps({**CA_META, "tokens": ["a", "b"], "layers": ["a", "b", "c"]}))
    with pytest.raises(BadFile) as e:
        s.read_crossattn()
    one_line_with(e.value, str(s.crossattn_path), "'counts'", "float32", "int64")


# ---------------------------------------------------------------------------------------------
# attribution


def make_attribution(n=3, size=8, grid=4) -> Attribution:
    maps = torch.rand(n, size, size, generator=gen(3))
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 1.0
    maps64 = torch.rand(n, grid, grid, generator=gen(4))
    return Attribution(maps, maps64, {**PROVENANCE, "layers": list(range(16)), "class": "cat"})


def test_attribution_round_trip(tmp_path: Path):
    att = make_attribution()
    s = SupportSet(tmp_path)
    assert s.write_attribution(att) == tmp_path / "attribution.safetensors"
    back = s.read_attribution()
    assert torch.equal(back.maps, att.maps) and torch.equal(back.maps64, att.maps64)
    assert back.meta == att.meta
    assert tensorfile.read(s.attribution_path, ATTRIBUTION).dims == {"N": 3, "S": 8, "G": 4}


def test_attribution_empty_support_set(tmp_path: Path):
    s = SupportSet(tmp_path)
    meta = {**PROVENANCE, "class": "cat"}
    s.write_attribution(Attribution(torch.zeros(0, 8, 8), torch.zeros(0, 4, 4), meta))
    back = s.read_attribution()
    assert back.maps.shape == (0, 8, 8) and back.maps64.shape == (0, 4, 4) and back.meta == meta


@pytest.mark.parametrize("tensor, value", [("attribution", 1.5), ("attribution", -0.25),
                                           ("attribution64", float("nan")), ("attribution64", float("inf"))])
def test_attribution_reader_range(tmp_path: Path, tensor, value):
    att = make_attribution()
    t = {"attribution": att.maps.clone(), "attribution64": att.maps64.clone()}
    t[tensor][1, 2, 3] = value
    s = SupportSet(tmp_path)
    tensorfile.write(s.attribution_path, ATTRIBUTION, t, att.meta)
    with pytest.raises(BadFile) as e:
        s.read_attribution()
    one_line_with(e.value, str(s.attribution_path), f"'{tensor}'", "outside [0, 1]", "ovdiff attribute")


def test_attribution_writer_refuses_bad_shapes(tmp_path: Path):
    s = SupportSet(tmp_path)
    att = make_attribution()
    with pytest.raises(ValueError) as e:
        s.write_attribution(Attribution(att.maps, torch.zeros(2, 4, 4), att.meta))  # N=3 vs N=2
    assert "N=2" in str(e.value)
    with pytest.raises(ValueError):
        s.write_attribution(Attribution(torch.zeros(3, 8, 9), att.maps64, att.meta))  # not square
    assert listing(tmp_path) == []


@pytest.mark.parametrize("tensor, value", [("attribution", 2.0), ("attribution", -0.25),
                                           ("attribution64", float("nan")), ("attribution64", float("inf"))])
def test_attribution_writer_refuses_values_outside_unit_range(tmp_path: Path, tensor, value):
    s = SupportSet(tmp_path)
    att = make_attribution()
    maps, maps64 = att.maps.clone(), att.maps64.clone()
    (maps if tensor == "attribution" else maps64)[1, 2, 3] = value
    with pytest.raises(ValueError) as e:
        s.write_attribution(Attribution(maps, maps64, att.meta))
    assert f"'{tensor}' has values outside [0, 1]" in str(e.value) and "refusing to write" in str(e.value)
    assert listing(tmp_path) == []


def test_attribution_bounds_themselves_are_in_range(tmp_path: Path):
    s = SupportSet(tmp_path)
    att = make_attribution()
    att = Attribution(torch.zeros_like(att.maps), torch.ones_like(att.maps64), att.meta)
    s.write_attribution(att)
    back = s.read_attribution()
    assert back.maps.max() == 0 and back.maps64.min() == 1


# ---------------------------------------------------------------------------------------------
# proposals and partial batches


def test_proposals_round_trip_bit_packed(tmp_path: Path):
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[0, 0, :3] = True       # row 0: pixels 0, 1, 2 → bytes 0b11100000, 0
    masks[1, 4, 8:] = True       # row 4: pixels 8, 9 → bytes 0, 0b11000000
    meta = {**PROVENANCE, "class": "cat", "proposer": "cutler"}
    s = SupportSet(tmp_path)
    s.write_proposals(SetProposals(masks, torch.tensor([0.9, 0.5], dtype=torch.float64), torch.tensor([0, 3]), meta))
    f = tensorfile.read(s.proposals_path, PROPOSALS)
    assert f.dims == {"J": 2, "S": 10, "B": 2} and f.meta["size"] == 10
    assert f.tensors["masks"][0, 0].tolist() == [224, 0] and f.tensors["masks"][1, 4].tolist() == [0, 192]
    assert int(f.tensors["masks"].sum()) == 224 + 192
    back = s.read_proposals()
    assert torch.equal(back.masks, masks)
    assert back.scores.dtype == torch.float32 and back.scores.tolist() == pytest.approx([0.9, 0.5])
    assert back.image.tolist() == [0, 3] and back.meta == {**meta, "size": 10}


def test_proposals_none(tmp_path: Path):
    s = SupportSet(tmp_path)
    meta = {**PROVENANCE, "class": "cat", "proposer": "cutler"}
    s.write_proposals(SetProposals(torch.zeros(0, 6, 6, dtype=torch.bool), torch.zeros(0),
                                   torch.zeros(0, dtype=torch.int64), meta))
    back = s.read_proposals()
    assert back.masks.shape == (0, 6, 6) and back.scores.shape == (0,) and back.meta["size"] == 6


def test_partial_batch_round_trip(tmp_path: Path):
    s = SupportSet(tmp_path)
    attn = torch.rand(2, 3, 2, 4, 4, generator=gen(7))
    batch = AttentionBatch(attn, torch.full((2, 3), 60, dtype=torch.int64), torch.tensor([4, 5]), {"seed": 1})
    assert s.write_partial(2, batch) == tmp_path / ".crossattn-partial" / "batch-00002.safetensors"
    back = s.read_partial(2)
    assert torch.equal(back.attn, attn) and back.counts.tolist() == [[60] * 3] * 2
    assert back.indices.tolist() == [4, 5] and back.params == {"seed": 1}


# ---------------------------------------------------------------------------------------------
# prototypes


D = 6


def make_side(seed: int, instances: int, parts: int, pooled: int, with_class: bool = True) -> Side:
    g = gen(seed)
    return Side(
        class_proto=torch.randn(1 if with_class else 0, D, generator=g),
        instance=torch.randn(instances, D, generator=g),
        instance_image=torch.arange(instances, dtype=torch.int64) * 2,
        part=torch.randn(parts, D, generator=g) * 100,  # raw, not normalised
        pooled_index=torch.randint(0, 8, (pooled, 3), generator=g),
        pooled_label=torch.arange(pooled, dtype=torch.int64) % max(parts, 1),
    )


def make_prototypes(**meta) -> Prototypes:
    return Prototypes(make_side(5, 3, 4, 10), make_side(6, 2, 3, 7),
                      {**PROVENANCE, "class": "hot dog", "extractor": "dino", "clusters": 4, **meta})


def assert_side_equal(a: Side, b: Side) -> None:
    for name in ("class_proto", "instance", "instance_image", "part", "pooled_index", "pooled_label"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def test_prototypes_round_trip(tmp_path: Path):
    protos = make_prototypes()
    path = prototype_path(tmp_path, "hot-dog", "dino")
    assert path == tmp_path / "hot-dog.dino.safetensors"
    write_prototypes(path, protos)
    back = read_prototypes(path)
    assert_side_equal(back.fg, protos.fg)
    assert_side_equal(back.bg, protos.bg)
    assert back.meta == protos.meta
    assert (back.class_name, back.extractor, back.dim) == ("hot dog", "dino", 6)
    assert back.fg.count() == 1 + 3 + 4 and back.bg.count() == 1 + 2 + 3
    assert raw_header(path)["schema"] == "ovdiff.prototypes/1"


def test_prototypes_empty_background(tmp_path: Path):
    protos = Prototypes(make_side(5, 0, 0, 0), Side.empty(D),
                        {**PROVENANCE, "class": "sky", "extractor": "sd"})
    path = tmp_path / "sky.sd.safetensors"
    write_prototypes(path, protos)
    back = read_prototypes(path)
    assert back.bg.count() == 0 and back.fg.count() == 1
    assert back.bg.pooled_index.shape == (0, 3) and back.bg.class_proto.shape == (0, D)
    assert_side_equal(back.fg, protos.fg)
    assert back.meta == protos.meta


def _side(base: Side, **kw) -> Side:
    fields = {n: getattr(base, n) for n in ("class_proto", "instance", "instance_image", "part", "pooled_index",
                                            "pooled_label")}
    fields.update(kw)
    return Side(**fields)


def _bad_prototypes(case: str) -> Prototypes:
    p = make_prototypes()
    fg, bg, meta = p.fg, p.bg, p.meta
    nan = fg.part.clone()
    nan[1, 2] = float("nan")
    if case == "nan":
        fg = _side(fg, part=nan)
    elif case == "two-class":
        fg = _side(fg, class_proto=torch.zeros(2, D))
    elif case == "no-fg-class":
        fg = _side(fg, class_proto=torch.zeros(0, D))
    elif case == "label-range":
        bg = _side(bg, pooled_label=torch.full((7,), 3, dtype=torch.int64))  # K = 3
    elif case == "labels-without-parts":
        bg = _side(bg, part=torch.zeros(0, D), pooled_label=torch.zeros(7, dtype=torch.int64))
    elif case == "negative-image":
        fg = _side(fg, instance_image=torch.tensor([0, -1, 2]))
    elif case == "meta":
        meta = {"class": "hot dog"}
    elif case == "dim":
        bg = _side(bg, part=torch.zeros(3, D + 1))
    return Prototypes(fg, bg, meta)


PROTO_CASES = {"nan": "non-finite fg part", "two-class": "2 fg class prototypes", "no-fg-class": "no foreground",
               "label-range": "bg cluster labels outside 0..2", "labels-without-parts": "bg cluster labels outside",
               "negative-image": "negative fg instance", "meta": "metadata lacks extractor, models, inputs",
               "dim": "D="}
#: What the reader says of the same files (the schema check words a missing key differently).
PROTO_READ_CASES = {**PROTO_CASES,
                    "meta": "lacks the metadata extractor, models, inputs that ovdiff.prototypes/1 requires"}


@pytest.mark.parametrize("case", list(PROTO_CASES))
def test_prototypes_writer_refuses(tmp_path: Path, case):
    path = tmp_path / "x.dino.safetensors"
    with pytest.raises(ValueError) as e:
        write_prototypes(path, _bad_prototypes(case))
    assert PROTO_CASES[case] in str(e.value) and str(path) in str(e.value)
    assert listing(tmp_path) == []


def _proto_tensors(p: Prototypes) -> dict[str, torch.Tensor]:
    out = {}
    for side in ("fg", "bg"):
        s = getattr(p, side)
        out.update({f"{side}.class": s.class_proto, f"{side}.instance": s.instance,
                    f"{side}.instance_image": s.instance_image, f"{side}.part": s.part,
                    f"{side}.pooled_index": s.pooled_index, f"{side}.pooled_label": s.pooled_label})
    return out


@pytest.mark.parametrize("case", ["nan", "two-class", "no-fg-class", "label-range", "negative-image", "meta"])
def test_prototypes_reader_rejects(tmp_path: Path, case):
    bad = _bad_prototypes(case)
    path = tmp_path / "x.dino.safetensors"
    if case == "meta":  # the generic writer refuses it too, so write it below the checks
        write_raw(path, _proto_tensors(bad), PROTOTYPES.id, json.dumps(bad.meta))
    else:
        tensorfile.write(path, PROTOTYPES, _proto_tensors(bad), bad.meta)  # the generic writer lets it through
    with pytest.raises(BadFile) as e:
        read_prototypes(path)
    one_line_with(e.value, str(path), PROTO_READ_CASES[case], "ovdiff prototype")


def test_prototypes_newer_version(tmp_path: Path):
    path = write_raw(tmp_path / "x.safetensors", _proto_tensors(make_prototypes()), "ovdiff.prototypes/2",
                     json.dumps({"class": "cat", "extractor": "dino"}))
    with pytest.raises(BadFile) as e:
        read_prototypes(path)
    one_line_with(e.value, str(path), "ovdiff.prototypes/2", "newer", "ovdiff.prototypes/1")


# ---------------------------------------------------------------------------------------------
# banks


def unit_rows(m: int, seed: int) -> torch.Tensor:
    v = torch.randn(m, D, generator=gen(seed))
    return v / v.norm(dim=1, keepdim=True)


def make_bank() -> Bank:
    vocab = build("mine", [("cat", None, None), ("sky", None, None), ("keyboard", None, None)])
    fg = Rows(unit_rows(5, 7), torch.tensor([1, 1, 2, 3, 3]), torch.tensor([0, 1, 0, 0, 2]),
              torch.tensor([0, 0, 0, 0, 5]))
    bg = Rows(unit_rows(3, 8), torch.tensor([1, 3, 3]), torch.tensor([0, 2, 2]), torch.tensor([0, 1, 4]))
    return Bank(fg, bg, vocab, {**PROVENANCE, "extractor": "clip", "threshold": 0.85, "dropped": {"cat": 2}})


def _bank_tensors(b: Bank) -> dict[str, torch.Tensor]:
    out = {}
    for side in ("fg", "bg"):
        s = getattr(b, side)
        out.update({side: s.vectors, f"{side}_owner": s.owner, f"{side}_kind": s.kind, f"{side}_index": s.index})
    return out


def test_bank_round_trip(tmp_path: Path):
    bank = make_bank()
    path = bank_path(tmp_path, "clip")
    assert path == tmp_path / "bank.clip.safetensors"
    write_bank(path, bank)
    back = read_bank(path)
    for side in ("fg", "bg"):
        a, b = getattr(back, side), getattr(bank, side)
        for name in ("vectors", "owner", "kind", "index"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (side, name)
    assert back.vocabulary == bank.vocabulary
    assert back.vocabulary.classes[2].prompt == "computer keyboard" and back.vocabulary.classes[1].kind == "stuff"
    assert back.meta == bank.meta
    assert back.extractor == "clip"
    stored = tensorfile.read(path, BANK).meta["vocabulary"]
    assert stored == {"name": "mine", "classes": [["cat", "cat", "thing"], ["sky", "sky", "stuff"],
                                                  ["keyboard", "computer keyboard", "thing"]]}


def test_bank_without_background_rows(tmp_path: Path):
    vocab = from_words(["sky"])
    bank = Bank(Rows(unit_rows(2, 9), torch.tensor([1, 1]), torch.tensor([0, 2]), torch.tensor([0, 0])),
                Rows(torch.zeros(0, D), *(torch.zeros(0, dtype=torch.int64) for _ in range(3))),
                vocab, {**PROVENANCE, "extractor": "sd"})
    path = tmp_path / "bank.sd.safetensors"
    write_bank(path, bank)
    back = read_bank(path)
    assert back.bg.vectors.shape == (0, D) and torch.equal(back.fg.vectors, bank.fg.vectors)
    assert back.meta == bank.meta and back.vocabulary == vocab


def _bad_bank(case: str) -> Bank:
    b = make_bank()
    fg, bg, meta = b.fg, b.bg, b.meta
    if case == "norm":
        fg = Rows(fg.vectors * 1.01, fg.owner, fg.kind, fg.index)
    elif case == "nan":
        v = bg.vectors.clone()
        v[0, 0] = float("nan")
        bg = Rows(v, bg.owner, bg.kind, bg.index)
    elif case == "owner-0":
        fg = Rows(fg.vectors, torch.tensor([0, 1, 2, 3, 3]), fg.kind, fg.index)
    elif case == "owner-4":
        bg = Rows(bg.vectors, torch.tensor([1, 3, 4]), bg.kind, bg.index)
    elif case == "kind":
        fg = Rows(fg.vectors, fg.owner, torch.tensor([0, 1, 3, 0, 0]), fg.index)
    elif case == "meta":
        meta = {"threshold": 0.85}
    return Bank(fg, bg, b.vocabulary, meta)


BANK_CASES = {"norm": "fg vectors that are not L2-normalised", "nan": "non-finite bg vectors",
              "owner-0": "fg owners outside the vocabulary's labels 1..3",
              "owner-4": "bg owners outside the vocabulary's labels 1..3",
              "kind": "fg kinds outside 0..2", "meta": "metadata lacks extractor, models, inputs"}
BANK_READ_CASES = {**BANK_CASES, "meta": "lacks the metadata extractor, models, inputs that ovdiff.bank/1 requires"}


@pytest.mark.parametrize("case", list(BANK_CASES))
def test_bank_writer_refuses(tmp_path: Path, case):
    path = tmp_path / "bank.clip.safetensors"
    with pytest.raises(ValueError) as e:
        write_bank(path, _bad_bank(case))
    assert BANK_CASES[case] in str(e.value) and str(path) in str(e.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("case", list(BANK_CASES))
def test_bank_reader_rejects(tmp_path: Path, case):
    bad = _bad_bank(case)
    path = tmp_path / "bank.clip.safetensors"
    meta = {**bad.meta, "vocabulary": bad.vocabulary.to_meta()}
    if case == "meta":  # the generic writer refuses it too, so write it below the checks
        write_raw(path, _bank_tensors(bad), BANK.id, json.dumps(meta))
    else:
        tensorfile.write(path, BANK, _bank_tensors(bad), meta)
    with pytest.raises(BadFile) as e:
        read_bank(path)
    one_line_with(e.value, str(path), BANK_READ_CASES[case], "ovdiff filter-stuff")


@pytest.mark.parametrize("vocab_meta, needle", [
    (None, "lacks the metadata vocabulary that ovdiff.bank/1 requires"),
    ({"name": "x"}, "no readable vocabulary"),
    ({"name": "x", "classes": []}, "no readable vocabulary"),
    ("voc", "no readable vocabulary"),
])
def test_bank_reader_needs_vocabulary(tmp_path: Path, vocab_meta, needle):
    bank = make_bank()
    meta = dict(bank.meta)
    path = tmp_path / "bank.clip.safetensors"
    if vocab_meta is None:  # the generic writer refuses a bank without one, so write it below the checks
        write_raw(path, _bank_tensors(bank), BANK.id, json.dumps(meta))
    else:
        meta["vocabulary"] = vocab_meta
        tensorfile.write(path, BANK, _bank_tensors(bank), meta)
    with pytest.raises(BadFile) as e:
        read_bank(path)
    one_line_with(e.value, str(path), needle, "ovdiff filter-stuff")


def test_bank_read_as_prototypes_and_back(tmp_path: Path):
    bpath = tmp_path / "bank.clip.safetensors"
    write_bank(bpath, make_bank())
    with pytest.raises(BadFile) as e:
        read_prototypes(bpath)
    one_line_with(e.value, str(bpath), "ovdiff.bank/1", "ovdiff.prototypes/1", "ovdiff prototype")
    ppath = tmp_path / "cat.clip.safetensors"
    write_prototypes(ppath, make_prototypes())
    with pytest.raises(BadFile) as e:
        read_bank(ppath)
    one_line_with(e.value, str(ppath), "ovdiff.prototypes/1", "ovdiff.bank/1", "ovdiff filter-stuff")
    # and a cross-attention file is neither
    SupportSet(tmp_path).crossattn_path.write_bytes(bpath.read_bytes())
    with pytest.raises(BadFile) as e:
        SupportSet(tmp_path).read_crossattn()
    one_line_with(e.value, "ovdiff.bank/1", "ovdiff.crossattn/1", "ovdiff sample")


def test_truncated_prototypes_and_bank(tmp_path: Path):
    for path, writer, reader, obj in [
        (tmp_path / "cat.dino.safetensors", write_prototypes, read_prototypes, make_prototypes()),
        (tmp_path / "bank.dino.safetensors", write_bank, read_bank, make_bank()),
    ]:
        writer(path, obj)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 10])
        with pytest.raises(BadFile) as e:
            reader(path)
        one_line_with(e.value, str(path), "truncated")


# ---------------------------------------------------------------------------------------------
# required metadata (provenance): every kind of file must carry its schema's meta_keys


def test_schemas_require_their_metadata():
    assert CROSSATTN.meta_keys == ("class", "prompt", "models")
    assert ATTRIBUTION.meta_keys == ("class", "models", "inputs")
    assert PROTOTYPES.meta_keys == ("class", "extractor", "models", "inputs")
    assert BANK.meta_keys == ("extractor", "models", "inputs", "vocabulary")
    assert THING.meta_keys == ()


def _without(meta: dict, key: str) -> dict:
    assert key in meta, (key, meta)  # the valid metadata carries it, so dropping it is the only fault
    return {k: v for k, v in meta.items() if k != key}


def _write_without(kind: str, key: str, folder: Path) -> Path:
    """Write a valid file of ``kind`` through its own writer, but with metadata lacking ``key``."""
    if kind == "crossattn":
        rec = make_crossattn()
        s = SupportSet(folder)
        s.write_crossattn(_replace(rec, meta=_without(rec.meta, key)))
        return s.crossattn_path
    if kind == "attribution":
        att = make_attribution()
        s = SupportSet(folder)
        s.write_attribution(Attribution(att.maps, att.maps64, _without(att.meta, key)))
        return s.attribution_path
    if kind == "prototypes":
        p = make_prototypes()
        path = prototype_path(folder, "hot-dog", "dino")
        write_prototypes(path, Prototypes(p.fg, p.bg, _without(p.meta, key)))
        return path
    b = make_bank()
    path = bank_path(folder, "clip")
    if key == "vocabulary":  # write_bank always adds it, so go through the generic writer
        tensorfile.write(path, BANK, _bank_tensors(b), b.meta)
    else:
        write_bank(path, Bank(b.fg, b.bg, b.vocabulary, _without(b.meta, key)))
    return path


REQUIRED = [(kind, key) for kind, schema in [("crossattn", CROSSATTN), ("attribution", ATTRIBUTION),
                                             ("prototypes", PROTOTYPES), ("bank", BANK)]
            for key in schema.meta_keys]


@pytest.mark.parametrize("kind, key", REQUIRED, ids=[f"{k}-{m}" for k, m in REQUIRED])
def test_writer_refuses_missing_metadata(tmp_path: Path, kind, key):
    path = {"crossattn": tmp_path / "crossattn.safetensors", "attribution": tmp_path / "attribution.safetensors",
            "prototypes": tmp_path / "hot-dog.dino.safetensors", "bank": tmp_path / "bank.clip.safetensors"}[kind]
    with pytest.raises(ValueError) as e:
        _write_without(kind, key, tmp_path)
    text = str(e.value)
    assert "\n" not in text
    assert f"refusing to write {path}: metadata lacks {key}" in text, text
    assert listing(tmp_path) == []


@pytest.mark.parametrize("schema, meta, needle", [
    (PROTOTYPES, {}, "metadata lacks class, extractor, models, inputs"),
    (PROTOTYPES, {"class": "cat", "extractor": "dino"}, "metadata lacks models, inputs"),
    (BANK, {"extractor": "clip", "models": {}}, "metadata lacks inputs, vocabulary"),
])
def test_writer_names_every_missing_key(tmp_path: Path, schema, meta, needle):
    path = tmp_path / "x.safetensors"
    tensors = _proto_tensors(make_prototypes()) if schema is PROTOTYPES else _bank_tensors(make_bank())
    with pytest.raises(ValueError) as e:
        tensorfile.write(path, schema, tensors, meta)
    assert needle in str(e.value) and str(path) in str(e.value)
    assert listing(tmp_path) == []


def _full_file(kind: str) -> tuple[Schema, dict[str, torch.Tensor], dict, object]:
    """A valid file of ``kind`` as (schema, tensors, complete metadata, reader)."""
    if kind == "crossattn":
        rec = make_crossattn()
        return (CROSSATTN, _crossattn_tensors(rec),
                {**rec.meta, "tokens": list(rec.tokens), "layers": list(rec.layers)},
                lambda p: SupportSet(p.parent).read_crossattn())
    if kind == "attribution":
        att = make_attribution()
        return (ATTRIBUTION, {"attribution": att.maps, "attribution64": att.maps64}, att.meta,
                lambda p: SupportSet(p.parent).read_attribution())
    if kind == "prototypes":
        p = make_prototypes()
        return PROTOTYPES, _proto_tensors(p), p.meta, read_prototypes
    b = make_bank()
    return BANK, _bank_tensors(b), {**b.meta, "vocabulary": b.vocabulary.to_meta()}, read_bank


@pytest.mark.parametrize("kind, key", REQUIRED, ids=[f"{k}-{m}" for k, m in REQUIRED])
def test_reader_rejects_missing_metadata(tmp_path: Path, kind, key):
    schema, tensors, meta, reader = _full_file(kind)
    name = {"crossattn": "crossattn.safetensors", "attribution": "attribution.safetensors",
            "prototypes": "hot-dog.dino.safetensors", "bank": "bank.clip.safetensors"}[kind]
    path = tmp_path / name
    # Written below the writer's checks: with every key the file reads, so the missing key is the fault.
    write_raw(path, tensors, schema.id, json.dumps(meta))
    reader(path)
    write_raw(path, tensors, schema.id, json.dumps(_without(meta, key)))
    with pytest.raises(BadFile) as e:
        reader(path)
    one_line_with(e.value, str(path), f"lacks the metadata {key} that {schema.id} requires", schema.made_by)
    with pytest.raises(BadFile) as e:  # the lazy check sees it too
        tensorfile.read(path, schema, load=False)
    one_line_with(e.value, str(path), f"lacks the metadata {key}", schema.made_by)


def test_reader_names_every_missing_key(tmp_path: Path):
    """An ovdiff file from before provenance (class and extractor only) names all it lacks."""
    path = tmp_path / "cat.dino.safetensors"
    write_raw(path, _proto_tensors(make_prototypes()), "ovdiff.prototypes/1",
              json.dumps({"class": "cat", "extractor": "dino"}))
    with pytest.raises(BadFile) as e:
        read_prototypes(path)
    one_line_with(e.value, str(path), "lacks the metadata models, inputs that ovdiff.prototypes/1 requires",
                  "make it with `ovdiff prototype`")
    assert e.value.path == str(path) and e.value.made_by == "ovdiff prototype"
