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
