"""What a preset is made of: :class:`Component` (one model and how to load it) and :class:`Preset`
(named components by slot). The registry (:mod:`ovdiff_cli.models.registry`) keeps the presets;
the built-in ones (:mod:`ovdiff_cli.models.builtin`) and plugins build them from these classes.
The contract a plugin follows is in docs/plugins.md.

A component's ``loader(files, device, dtype)`` receives the local paths of its sources' files
(empty for code-built models) and returns the object of its slot (see
:mod:`ovdiff_cli.models.interfaces`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli.errors import BadInput, ModelUnavailable
from ovdiff_cli.models.sources import Source

#: ``loader(files, device, dtype) -> object``: files maps each source file's name to its local path.
Loader = Callable[[dict[str, Path], torch.device, torch.dtype], Any]


@dataclass(frozen=True)
class Component:
    """One model: a unique key, where its weights are, what it needs, how to load it."""

    key: str
    description: str
    loader: Loader
    sources: tuple[Source, ...] = ()
    requires: tuple[str, ...] = ()
    tiny: bool = False
    install: str = ""  # how to install ``requires`` when a plain `pip install` is not the way
    optional: bool = False  # not needed by the default pipeline (``models check`` passes without it)

    def missing_files(self) -> list[str]:
        return [name for s in self.sources for name in s.missing()]

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def where(self) -> str:
        return "; ".join(s.where() for s in self.sources) if self.sources else "built in code (no download)"

    def locate(self, preset: str) -> dict[str, Path]:
        """Local paths of every source file, or a one-line ModelUnavailable naming the fix."""
        files: dict[str, Path] = {}
        for s in self.sources:
            found = s.locate()
            if found is None:
                raise ModelUnavailable(self.key, s.where(), f"missing {', '.join(s.missing())}; run "
                                       f"`ovdiff models download {preset}` (it needs internet)")
            files.update(found)
        return files


@dataclass(frozen=True)
class Preset:
    """A named set of components by slot (``generator``, ``extractor.dino``, …)."""

    name: str
    description: str
    slots: Mapping[str, Component] = field(default_factory=dict)
    tiny: bool = False

    def component(self, slot: str) -> Component:
        try:
            return self.slots[slot]
        except KeyError:
            raise BadInput(f"preset {self.name!r} has no {slot!r} model",
                           f"its slots: {', '.join(self.slots) or 'none'}; see `ovdiff models list`") from None

    def describe(self) -> dict[str, Any]:
        """What outputs record about the models that made them."""
        return {"preset": self.name, "tiny": self.tiny or any(c.tiny for c in self.slots.values()),
                "components": {slot: c.key for slot, c in self.slots.items()}}
