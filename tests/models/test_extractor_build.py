"""The one extractor path (models/extractor_build.py): slots and variants, options read back from
stored features, the type check, the stored-settings check; window rules live on the networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovdiff_cli.errors import BadFile, ModelUnavailable
from ovdiff_cli.models import registry
from ovdiff_cli.models.builtin import TINY_DINO, TINY_MAE
from ovdiff_cli.models.extractor_build import FeatureOptions, build_extractor, network_dtype, stored_variant
from ovdiff_cli.models.extractors import ClipKeys, SDFeatures, ViTKeys, is_variant_slot, slot_of
from ovdiff_cli.models.interfaces import FeatureExtractor
from ovdiff_cli.models.vit import ViT


def test_slots_of_extractors_and_their_variants() -> None:
    assert slot_of("dino") == "extractor.dino"
    assert slot_of("dino", "l16") == "extractor.dino"          # dino comes in one network only
    assert slot_of("mae") == slot_of("mae", "b16") == "extractor.mae"
    assert slot_of("mae", "l16") == "extractor.mae-l16"
    assert slot_of("hue") == "extractor.hue"                   # a plugin's extractor
    assert is_variant_slot("extractor.mae-l16")
    assert not any(is_variant_slot(s) for s in ("extractor.mae", "extractor.dino", "extractor.sd"))


def test_the_variant_of_stored_features_is_the_one_whose_slot_holds_that_model() -> None:
    assert stored_variant("mae", "mae-vitl16-448") == "l16"     # paper's extractor.mae-l16 component
    assert stored_variant("mae", "mae-vitb16-448") == "b16"
    assert stored_variant("mae", "tiny-mae") == "b16"
    assert stored_variant("mae", "mae-vitl16-something-else") is None  # no preset holds it: the default
    assert stored_variant("dino", "dino-vitb8") is None


def test_options_read_back_from_stored_features() -> None:
    sd = FeatureOptions.stored("sd", {"extractor": "sd", "layers": "paper-v1", "timestep": 500})
    assert (sd.sd_layers, sd.sd_timestep, sd.clip_norm, sd.clip_readout) == ("paper-v1", 500, "imagenet", "keys")
    clip = FeatureOptions.stored("clip", {"norm": "clip", "readout": "token"})
    assert (clip.clip_norm, clip.clip_readout) == ("clip", "token")
    assert FeatureOptions.stored("mae", {"model": "mae-vitl16-448"}).slot("mae") == "extractor.mae-l16"
    assert FeatureOptions.stored("dino", {}).expected is None


def test_network_precision_is_dtype_for_sd_and_vit_dtype_for_the_others() -> None:
    assert network_dtype("sd", torch.float16, torch.float32) == torch.float16
    assert network_dtype("dino", torch.float16, torch.float32) == torch.float32
    assert network_dtype("clip", torch.float16, None) == torch.float16


def test_build_gives_each_builtin_its_adapter_with_the_options() -> None:
    tiny = registry.get_preset("tiny")
    sd = build_extractor(tiny, "sd", options=FeatureOptions(sd_layers="paper-v1", sd_timestep=300))
    assert isinstance(sd, SDFeatures) and (sd.layer_set, sd.timestep) == ("paper-v1", 300)
    clip = build_extractor(tiny, "clip", options=FeatureOptions(clip_norm="clip", clip_readout="token"))
    assert isinstance(clip, ClipKeys) and (clip.norm, clip.readout) == ("clip", "token")
    dino = build_extractor(tiny, "dino")
    assert isinstance(dino, ViTKeys) and dino.name == "dino" and isinstance(dino, FeatureExtractor)


def test_build_checks_the_stored_features(tmp_path: Path) -> None:
    tiny = registry.get_preset("tiny")
    settings = build_extractor(tiny, "dino").settings()
    same = build_extractor(tiny, "dino", options=FeatureOptions.stored("dino", settings), source=tmp_path / "b")
    assert same.settings() == settings
    with pytest.raises(BadFile) as e:
        build_extractor(tiny, "dino", options=FeatureOptions.stored("dino", {**settings, "block": -2}),
                        source=tmp_path / "b")
    assert str(tmp_path / "b") in str(e.value) and "other feature settings or models than this preset gives (tiny)" \
        in str(e.value)


def test_build_refuses_an_object_that_is_not_a_feature_extractor() -> None:
    comp = registry.Component("not-features", "an object without features", lambda f, d, t: object(), tiny=True)
    registry.register_preset(registry.Preset("no-features", "test", {"extractor.odd": comp}))
    try:
        with pytest.raises(ModelUnavailable, match="not a FeatureExtractor"):
            build_extractor(registry.get_preset("no-features"), "odd")
    finally:
        registry.unregister_preset("no-features")


def test_the_window_rule_is_the_networks_not_the_names() -> None:
    small = torch.rand(3, 336, 336)
    torch.manual_seed(0)
    keeps, squashes = ViT(TINY_DINO), ViT(TINY_MAE)
    # named alike, the network's own rule decides: DINO's keeps a small window, MAE's squashes it to 448²
    assert torch.equal(ViTKeys("dino", keeps).window_input(small), small)
    assert ViTKeys("dino", squashes).window_input(small).shape == (3, 448, 448)
    assert torch.equal(ViTKeys("mae", keeps).window_input(small), small)
