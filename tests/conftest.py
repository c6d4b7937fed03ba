"""Test settings: offline, CPU, and shared fixtures.

HF_HUB_OFFLINE must be set before huggingface_hub is imported, or every failed hub lookup
retries for tens of seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the Hugging Face and torch caches at empty folders (as on a fresh machine)."""
    import huggingface_hub.constants as hf_constants
    import torch.hub

    hub = tmp_path / "hf-hub"
    torch_home = tmp_path / "torch-hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(torch_home))
    yield tmp_path
    torch.hub.set_dir(old)


@pytest.fixture(autouse=True)
def _default_verbosity():
    """Commands run in-process share the log level; start every test from the default."""
    from ovdiff_cli import log

    log.set_verbosity(0)
    yield
    log.set_verbosity(0)


# -- support sets sampled once per session (tests only read them; copy one before changing it) -------


@pytest.fixture(scope="session")
def cat_and_plant(tmp_path_factory) -> Path:
    """``ovdiff sample cat "potted plant"`` on the tiny preset (tests.helpers.FAST): one folder per class."""
    from ovdiff_cli.cli import main
    from tests.helpers import FAST

    out = tmp_path_factory.mktemp("base") / "support"
    result = CliRunner().invoke(main, ["sample", "cat", "potted plant", *FAST, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def masked(cat_and_plant: Path, tmp_path_factory) -> Path:
    """The cat set of ``cat_and_plant`` (the same files a lone ``sample cat`` draws, as every class
    starts from the same noise), attributed and masked by the threshold proposer: 3 images."""
    import shutil

    from ovdiff_cli.cli import main

    r = CliRunner()
    out = tmp_path_factory.mktemp("proto") / "support" / "cat"
    shutil.copytree(cat_and_plant / "cat", out)
    assert r.invoke(main, ["attribute", str(out)]).exit_code == 0
    assert r.invoke(main, ["mask", str(out), "--models", "tiny", "--proposer", "threshold"]).exit_code == 0
    return out


# -- hand-made extractors registered as presets (tests.helpers) -------------------------------------------


@pytest.fixture
def colour_preset():
    """Preset ``colour``: extractor.dino = ColourFeatures, extractor.flat = FlatFeatures."""
    from ovdiff_cli.models import registry
    from tests.helpers import ColourFeatures, FlatFeatures

    comp = registry.Component("colour", "block colours for tests", lambda f, d, t: ColourFeatures(), tiny=True)
    flat = registry.Component("flat", "always red, for tests", lambda f, d, t: FlatFeatures(), tiny=True)
    registry.register_preset(registry.Preset("colour", "tests", {"extractor.dino": comp, "extractor.flat": flat},
                                             tiny=True), replace_existing=True)
    yield
    registry.unregister_preset("colour")
    registry.clear_cache()


@pytest.fixture
def hand_preset():
    """Preset ``handx``: extractor.dino = HandFeatures."""
    from ovdiff_cli.models import registry
    from tests.helpers import HandFeatures

    comp = registry.Component("hand-features", "hand-made features for tests", lambda f, d, t: HandFeatures(), tiny=True)
    registry.register_preset(registry.Preset("handx", "tests", {"extractor.dino": comp}, tiny=True))
    yield
    registry.unregister_preset("handx")
    registry.clear_cache()


# -- CutLER's detector on the reference's deterministic random weights (tests/models/cutler_reference) --


@pytest.fixture(scope="session")
def cutler_state() -> dict:
    """The 408 tensors of CutLER's checkpoint, drawn by the reference's recipe (about 3 s)."""
    from tests.models.cutler_reference.weights import random_state_dict

    return random_state_dict()


@pytest.fixture(scope="session")
def cutler_checkpoint(cutler_state: dict, tmp_path_factory) -> Path:
    """``{"model": state}`` saved as the published file is laid out, in
    HUB/checkpoints/cutler_cascade_final.pth (287 MB). Returns HUB, for ``torch.hub.set_dir``."""
    import torch

    hub = tmp_path_factory.mktemp("torch-hub")
    (hub / "checkpoints").mkdir()
    torch.save({"model": cutler_state}, hub / "checkpoints" / "cutler_cascade_final.pth")
    return hub


@pytest.fixture
def cutler_in_cache(cutler_checkpoint: Path):
    """torch's hub cache pointed at the folder holding the random-weight CutLER checkpoint."""
    import torch.hub

    from ovdiff_cli.models import registry

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(cutler_checkpoint))
    registry.clear_cache()
    yield cutler_checkpoint / "checkpoints" / "cutler_cascade_final.pth"
    torch.hub.set_dir(old)
    registry.clear_cache()
