"""Assertions shared by the format tests."""

from __future__ import annotations

from pathlib import Path


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
