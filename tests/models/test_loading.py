"""The real loading and download code, exercised offline: caches laid out as the hubs lay them
out, filled with tiny weights; a local HTTP server standing in for a checkpoint host."""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from ovdiff_cli.cli import main
from ovdiff_cli.errors import BadFile, ModelUnavailable
from ovdiff_cli.models import registry
from ovdiff_cli.models.builtin import TINY_DINO, TINY_MAE, _tiny_vit, _vit_loader
from ovdiff_cli.models.sd import SD15_FILES, SD15_REPO, SD15_SCHEDULER, build_tiny_sd
from ovdiff_cli.models.sources import HubFiles, UrlFile
from ovdiff_cli.models.tokenizer import vocab_and_merges

CPU = torch.device("cpu")
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


def _fake_hub_snapshot(hub: Path, repo: str) -> Path:
    """An empty snapshot folder for ``repo`` in a Hugging Face cache, with refs/main pointing at it."""
    root = hub / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    return snap


def test_sd15_loader_reads_a_hub_cache(empty_caches: Path) -> None:
    tiny = build_tiny_sd(CPU, torch.float32)
    snap = _fake_hub_snapshot(empty_caches / "hf-hub", SD15_REPO)
    tiny.unet.save_pretrained(snap / "unet", variant="fp16")
    tiny.vae.save_pretrained(snap / "vae", variant="fp16")
    tiny.text_encoder.save_pretrained(snap / "text_encoder", variant="fp16")
    tiny.tokenizer.save_pretrained(snap / "tokenizer")
    vocab, merges = vocab_and_merges()  # the files as the SD repository ships them
    (snap / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (snap / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = snap / "tokenizer" / "special_tokens_map.json"
    if not special.exists():
        special.write_text(json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                       "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    (snap / "scheduler").mkdir()
    (snap / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    (snap / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert HubFiles(SD15_REPO, SD15_FILES).missing() == []

    registry.clear_cache()
    sd = registry.load("paper", "generator")
    assert not sd.tiny and sd.name == SD15_REPO
    for a, b in zip(sd.unet.parameters(), tiny.unet.parameters()):
        assert torch.equal(a, b)
    assert sd.scheduler_config["beta_schedule"] == "scaled_linear"
    assert sd.token_ids(["a cat"]).tolist() == tiny.token_ids(["a cat"]).tolist()
    registry.clear_cache()


@pytest.mark.parametrize("wrap", [False, True])
def test_vit_checkpoints_load_from_torch_hub_cache(empty_caches: Path, wrap: bool) -> None:
    source = _tiny_vit(TINY_MAE, 5, "source")({}, CPU, torch.float32)
    state = dict(source.state_dict())
    if wrap:  # MAE training checkpoints: weights under 'model' with the decoder to drop, plus settings
        state = {"model": {**state, "decoder_embed.weight": torch.zeros(2, 2), "mask_token": torch.zeros(1)},
                 "args": argparse.Namespace(input_size=448, mask_ratio=0.75), "epoch": 1599}
    path = empty_caches / "ckpt.pth"
    torch.save(state, path)
    model = _vit_loader(TINY_MAE, "ckpt.pth", "mae")({"ckpt.pth": path}, CPU, torch.float32)
    for (n, a), b in zip(model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), n


def test_a_checkpoint_of_another_model_is_a_bad_file(tmp_path: Path) -> None:
    source = _tiny_vit(TINY_MAE, 5, "source")({}, CPU, torch.float32)
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(BadFile, match="ckpt.pth: is not a dino checkpoint.*ovdiff models download paper"):
        _vit_loader(TINY_DINO, "ckpt.pth", "dino")({"ckpt.pth": path}, CPU, torch.float32)
    path.write_bytes(b"not a pickle")
    with pytest.raises(BadFile):
        _vit_loader(TINY_DINO, "ckpt.pth", "dino")({"ckpt.pth": path}, CPU, torch.float32)


def test_a_corrupt_cached_file_fails_with_one_line(empty_caches: Path) -> None:
    from ovdiff_cli.models.clip import CLIP_REPO

    snap = _fake_hub_snapshot(empty_caches / "hf-hub", CLIP_REPO)
    (snap / "open_clip_model.safetensors").write_bytes(b"\x00" * 100)
    registry.clear_cache()
    with pytest.raises(ModelUnavailable) as info:
        registry.load("paper", "scorer")
    message = str(info.value)
    assert "\n" not in message and message.startswith("model clip-vitb16-openai is not available")
    assert "loading failed" in message and "ovdiff models download paper" in message


@pytest.fixture
def http_root(tmp_path: Path):
    """A local HTTP server serving ``tmp_path/www``; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_download_lands_in_torch_hub_cache(empty_caches: Path, http_root) -> None:
    www, base = http_root
    payload = bytes(range(256)) * 4096
    (www / "model.pth").write_bytes(payload)
    src = UrlFile(f"{base}/model.pth", "model.pth")
    assert src.missing() == ["model.pth"]
    files = src.download("test-model")
    assert files["model.pth"].read_bytes() == payload
    assert files["model.pth"].parent == empty_caches / "torch-hub" / "checkpoints"
    assert src.missing() == []


def test_url_download_failures_are_fast_and_leave_nothing(empty_caches: Path, http_root) -> None:
    _www, base = http_root
    for url in (f"{CLOSED}/model.pth", f"{base}/absent.pth"):
        src = UrlFile(url, "model.pth")
        start = time.perf_counter()
        with pytest.raises(ModelUnavailable, match="test-model"):
            src.download("test-model")
        assert time.perf_counter() - start < 10
        folder = src.path().parent
        assert not folder.exists() or list(folder.iterdir()) == []


def test_an_unwritable_checkpoint_cache_is_one_line(empty_caches: Path, http_root, monkeypatch) -> None:
    www, base = http_root
    (www / "model.pth").write_bytes(b"weights")
    blocker = empty_caches / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(UrlFile, "path", lambda self: blocker / "checkpoints" / self.filename)
    with pytest.raises(BadFile, match="cannot write here") as err:
        UrlFile(f"{base}/model.pth", "model.pth").download("m")
    assert str(blocker / "checkpoints") in str(err.value) and "TORCH_HOME" in str(err.value)
    assert blocker.read_text() == "not a folder"


def test_url_download_checks_the_hash_prefix(empty_caches: Path, http_root) -> None:
    import hashlib

    www, base = http_root
    payload = b"weights" * 1000
    (www / "model.pth").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    wrong = "1" if digest[0] == "0" else "0"
    with pytest.raises(ModelUnavailable, match="invalid hash value"):
        UrlFile(f"{base}/model.pth", "model.pth", sha256_prefix=wrong + digest[1:8]).download("m")
    assert list((empty_caches / "torch-hub" / "checkpoints").iterdir()) == []
    files = UrlFile(f"{base}/model.pth", "model.pth", sha256_prefix=digest[:8]).download("m")
    assert files["model.pth"].read_bytes() == payload


@pytest.fixture
def fake_hub(empty_caches: Path, monkeypatch):
    """A stand-in for the hub's ``snapshot_download`` (no network): the repository holds the files
    in the returned set; each call records its allow_patterns and lays the matching files out in the
    cache as the hub client would."""
    import huggingface_hub

    from ovdiff_cli.models import sources

    remote: set[str] = set()
    calls: list[list[str]] = []

    def snapshot_download(repo_id: str, *, revision=None, allow_patterns=None):
        calls.append(list(allow_patterns))
        snap = empty_caches / "hf-hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / ("0" * 40)
        for name in set(allow_patterns) & remote:
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            (snap / name).write_text(name)
        refs = snap.parents[1] / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        (refs / "main").write_text("0" * 40)
        return str(snap)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "_probe", lambda url, model, where: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return remote, calls


def test_hub_download_takes_the_first_alternative_the_repository_has(fake_hub) -> None:
    remote, calls = fake_hub
    remote.update({"config.json", "weights.bin", "sub/vocab.json"})  # no weights.safetensors
    src = HubFiles("org/model", ("config.json", ("weights.safetensors", "weights.bin"), "sub/vocab.json"))
    files = src.download("m")
    assert calls == [["config.json", "weights.safetensors", "sub/vocab.json"], ["weights.bin"]]
    assert {k: v.read_text() for k, v in files.items()} == {
        "config.json": "config.json", "weights.safetensors": "weights.bin", "sub/vocab.json": "sub/vocab.json"}
    assert src.missing() == []
    calls.clear()
    assert src.download("m") == files and calls == []  # all cached: no call


def test_hub_download_names_the_files_the_repository_lacks(fake_hub) -> None:
    remote, _calls = fake_hub
    remote.add("config.json")
    with pytest.raises(ModelUnavailable, match=r"download failed \(not in org/model: a.bin or b.bin; or the hub refused"):
        HubFiles("org/model", ("config.json", ("a.bin", "b.bin"))).download("m")


def test_hub_download_respects_offline_mode(empty_caches: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        HubFiles(SD15_REPO, ("model_index.json",)).download("sd15")


def test_models_download_fails_within_seconds_without_a_hub(empty_caches: Path, monkeypatch, runner) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", CLOSED)
    start = time.perf_counter()
    result = runner.invoke(main, ["models", "download", "paper"])
    assert time.perf_counter() - start < 10
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ovdiff: error: model sd15 is not available") and "cannot reach 127.0.0.1" in last
    assert "Traceback" not in result.output


def test_models_check_and_list(empty_caches: Path, runner) -> None:
    result = runner.invoke(main, ["models", "check", "tiny"])
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert {r[1] for r in rows} == {"tiny-sd", "tiny-dino", "tiny-clip", "tiny-mae"}
    assert all(r[3] == "ready" for r in rows)

    result = runner.invoke(main, ["models", "check", "paper", "--json"])
    assert result.exit_code == 1
    statuses = json.loads(result.stdout)
    sd = next(s for s in statuses if s["model"] == "sd15")
    assert not sd["ready"] and "unet/diffusion_pytorch_model.fp16.safetensors" in sd["missing_files"]
    assert sorted(sd["slots"]) == ["extractor.sd", "generator"]
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("ovdiff: error: 4 required model(s) cannot be loaded here: sd15, dino-vitb8, "
                    "clip-vitb16-openai, cutler-cascade; run `ovdiff models download paper`")
    cutler = next(s for s in statuses if s["model"] == "cutler-cascade")
    assert not cutler["optional"] and not cutler["ready"] and cutler["slots"] == ["proposer.cutler"]

    result = runner.invoke(main, ["models", "list", "--json"])
    listed = {p["preset"]: p for p in json.loads(result.stdout)}
    assert listed["tiny"]["tiny"] is True
    assert listed["paper"]["slots"]["extractor.dino"]["model"] == "dino-vitb8"

    result = runner.invoke(main, ["models", "download", "tiny"])
    assert result.exit_code == 0 and "built in code" in result.stdout


def _have(slot: str) -> bool:
    comp = registry.get_preset("paper").component(slot)
    return not comp.missing_files() and not comp.missing_packages()


@pytest.mark.weights
@pytest.mark.parametrize("slot,dim,grid", [("extractor.dino", 768, 56), ("extractor.mae", 768, 28)])
def test_real_vit_weights(slot, dim, grid) -> None:
    if not _have(slot):
        pytest.skip(f"{slot} weights not in the cache: run `ovdiff models download paper`")
    model = registry.load("paper", slot)
    assert model.keys(torch.rand(1, 3, 448, 448)).shape == (1, dim, grid, grid)


@pytest.mark.weights
def test_real_clip_weights() -> None:
    if not _have("extractor.clip"):
        pytest.skip("CLIP weights not in the cache: run `ovdiff models download paper`")
    clip = registry.load("paper", "extractor.clip")
    assert clip.keys(torch.rand(1, 3, 448, 448)).shape == (1, 768, 28, 28)
    emb = clip.encode_images(torch.rand(1, 3, 224, 224))
    txt = clip.encode_texts(["a photo of a cat"])
    assert emb.shape == txt.shape == (1, 512)


@pytest.mark.weights
def test_real_sd15_weights() -> None:
    if not _have("generator"):
        pytest.skip("SD-1.5 weights not in the cache: run `ovdiff models download paper`")
    sd = registry.load("paper", "generator")
    layers = sd.cross_attention_layers()
    assert len(layers) == 16 and all(m.heads == 8 for _, m in layers)
    assert sd.encode_text(["a cat"]).shape == (1, 77, 768)
