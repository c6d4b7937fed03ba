"""Assertions shared by the format tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The provenance every ovdiff tensor file must carry (``models`` and ``inputs``); merge it into
#: the metadata of valid crossattn, attribution, prototype and bank files.
PROVENANCE: dict[str, Any] = {"models": {"preset": "tiny", "tiny": True, "components": {}}, "inputs": {}}


def one_line_with(err: Exception, *parts: str) -> str:
    """The error's message is one line and contains every part."""
    text = str(err)
    assert "\n" not in text
    for part in parts:
        assert part in text, (part, text)
    return text


def only_files(folder: Path) -> list[str]:
    """Names of everything in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir())
