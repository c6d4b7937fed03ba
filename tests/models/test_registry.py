"""The preset registry: lookup, caching, registration from outside, entry points, fast failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from ovdiff_cli.errors import BadInput, ModelUnavailable
from ovdiff_cli.models import registry
from ovdiff_cli.models.builtin import tiny_preset
from ovdiff_cli.models.registry import Component, Preset


class Constant:
    """A user's own feature extractor: every pixel gets the same vector."""

    name = "constant"
    dim = 3

    def settings(self) -> dict:
        return {"value": 1.0}

    def window_input(self, window: torch.Tensor) -> torch.Tensor:
        return window  # sees a test window as it is

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.ones(images.shape[0], 3, images.shape[2] // 8, images.shape[3] // 8)


def _constant(_files, _device, _dtype) -> Constant:
    return Constant()


@pytest.fixture
def clean_registry():
    yield
    registry.unregister_preset("mine")
    registry.register_preset(tiny_preset(), replace_existing=True)


def test_builtin_presets_and_slots() -> None:
    names = [p.name for p in registry.presets()]
    assert {"paper", "tiny"} <= set(names)
    paper = registry.get_preset("paper")
    assert set(paper.slots) == {"generator", "safety_checker", "extractor.sd", "extractor.dino", "extractor.clip",
                                "extractor.mae", "extractor.mae-l16", "scorer", "proposer.cutler"}
    # SD is both generator and SD feature extractor; CLIP both extractor and scorer: one model each.
    assert paper.slots["generator"] is paper.slots["extractor.sd"]
    assert paper.slots["scorer"] is paper.slots["extractor.clip"]
    assert not paper.tiny and registry.get_preset("tiny").tiny


def test_tiny_outputs_say_so() -> None:
    d = registry.get_preset("tiny").describe()
    assert d["preset"] == "tiny" and d["tiny"] is True
    assert d["components"]["generator"] == "tiny-sd"
    assert registry.get_preset("paper").describe()["tiny"] is False


def test_unknown_preset_and_slot_are_input_errors() -> None:
    with pytest.raises(BadInput, match="no model preset 'nope'.*paper.*tiny"):
        registry.get_preset("nope")
    with pytest.raises(BadInput, match="has no 'proposer.cutler' model"):
        registry.load("tiny", "proposer.cutler")


def test_load_is_cached_per_device_and_dtype() -> None:
    a = registry.load("tiny", "extractor.dino")
    assert registry.load("tiny", "extractor.dino") is a
    b = registry.load("tiny", "extractor.dino", dtype=torch.float64)
    assert b is not a and next(b.parameters()).dtype == torch.float64
    assert registry.load("tiny", "generator") is registry.load("tiny", "extractor.sd")


def test_register_a_preset_and_a_component(clean_registry) -> None:
    comp = Component("constant-v1", "constant features", _constant)
    registry.register_preset(Preset("mine", "a user's preset", {"extractor.constant": comp}))
    ext = registry.load("mine", "extractor.constant")
    assert ext.features(torch.zeros(2, 3, 16, 24)).shape == (2, 3, 2, 3)
    with pytest.raises(BadInput, match="already registered"):
        registry.register_preset(Preset("mine", "again", {}))
    registry.register_component("tiny", "extractor.constant", comp)
    assert isinstance(registry.load("tiny", "extractor.constant"), Constant)
    assert "extractor.dino" in registry.get_preset("tiny").slots  # the others stay


def test_entry_point_plugins_are_loaded(monkeypatch, clean_registry) -> None:
    calls = []

    def plugin() -> None:
        calls.append(1)
        registry.register_preset(Preset("mine", "from a plugin", {"extractor.constant":
                                                                  Component("c", "c", _constant)}))

    class FakeEntryPoint:
        name, value = "mine", "mine_pkg:register"

        def load(self):
            return plugin

    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [FakeEntryPoint()] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setitem(registry._state, "entry_points", False)
    assert "mine" in [p.name for p in registry.presets()]
    registry.presets()
    assert calls == [1], "entry points load once"


def test_a_broken_plugin_warns_but_does_not_break(monkeypatch, capsys) -> None:
    class Broken:
        name, value = "broken", "broken_pkg:register"

        def load(self):
            raise ImportError("no module named broken_pkg")

    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [Broken()])
    monkeypatch.setitem(registry._state, "entry_points", False)
    from ovdiff_cli import log

    log.set_verbosity(0)
    assert "paper" in [p.name for p in registry.presets()]
    assert "model plugin broken (broken_pkg:register) failed to load" in capsys.readouterr().err


def test_paper_models_fail_fast_without_the_cache(empty_caches: Path) -> None:
    for slot in ["generator", "extractor.dino", "extractor.clip", "extractor.mae"]:
        start = time.perf_counter()
        with pytest.raises(ModelUnavailable) as info:
            registry.load("paper", slot)
        assert time.perf_counter() - start < 2
        message = str(info.value)
        assert "\n" not in message
        assert "ovdiff models download paper" in message
        assert str(empty_caches) in message  # where it looked


def test_cutler_without_its_checkpoint_names_the_download(empty_caches: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        registry.load("paper", "proposer.cutler")
    message = str(info.value)
    assert "\n" not in message and "cutler-cascade" in message and "detectron2" not in message
    assert "cutler_cascade_final.pth" in message and "ovdiff models download paper" in message
