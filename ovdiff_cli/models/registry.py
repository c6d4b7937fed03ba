"""The registry of model presets: named sets of components, one per slot.

Built in: ``paper`` (the method's models, from the local cache) and ``tiny`` (toy networks with
random weights, built in code; for tests and offline smoke runs). Others come from outside:

- in code: :func:`register_preset` for a whole preset, :func:`register_component` to put one
  component into a slot of an existing preset (e.g. your own extractor into ``paper``);
- from an installed package: an entry point in the group ``ovdiff.models`` naming a function
  that takes no arguments and calls the two functions above. Entry points load on first use.

Components and presets are the classes of :mod:`ovdiff_cli.models.components` (re-exported
here); what a plugin must register and what each slot's object must provide is in docs/plugins.md.
Loaded objects are cached per (component, device, dtype), so a model shared by two slots (SD as
generator and as feature extractor) loads once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ovdiff_cli import log
from ovdiff_cli.errors import BadInput, ModelUnavailable, OvdiffError
from ovdiff_cli.models.components import Component, Loader, Preset

__all__ = ["ENTRY_POINT_GROUP", "Component", "Loader", "Preset", "clear_cache", "get_preset", "load", "presets",
           "register_component", "register_preset", "unregister_preset"]

ENTRY_POINT_GROUP = "ovdiff.models"

_presets: dict[str, Preset] = {}
_loaded: dict[tuple[str, str, str], Any] = {}
_state = {"builtins": False, "entry_points": False}


def _ensure() -> None:
    """Register the built-in presets, then the plugins' (once each)."""
    if not _state["builtins"]:
        _state["builtins"] = True
        from ovdiff_cli.models import builtin

        for p in builtin.builtin_presets():
            _presets.setdefault(p.name, p)
    if not _state["entry_points"]:
        _state["entry_points"] = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()()
            except Exception as e:  # a broken plugin must not break the other commands
                log.warn_once(f"plugin:{ep.name}", f"model plugin {ep.name} ({ep.value}) failed to load: {e}")


def register_preset(preset: Preset, replace_existing: bool = False) -> None:
    """Add a preset; a name already taken is an error unless ``replace_existing``."""
    _ensure()
    if preset.name in _presets and not replace_existing:
        raise BadInput(f"a model preset named {preset.name!r} is already registered",
                       "choose another name or pass replace_existing=True")
    _presets[preset.name] = preset
    _loaded.clear()


def register_component(preset: str, slot: str, component: Component) -> None:
    """Put ``component`` into ``slot`` of an existing preset (adding or replacing it)."""
    current = get_preset(preset)
    _presets[preset] = replace(current, slots={**current.slots, slot: component})
    _loaded.clear()


def unregister_preset(name: str) -> None:
    """Remove a preset (tests and plugins that clean up after themselves)."""
    _ensure()
    _presets.pop(name, None)
    _loaded.clear()


def get_preset(name: str) -> Preset:
    _ensure()
    try:
        return _presets[name]
    except KeyError:
        raise BadInput(f"no model preset {name!r}", f"choose one of {', '.join(sorted(_presets))}") from None


def presets() -> list[Preset]:
    _ensure()
    return [_presets[k] for k in sorted(_presets)]


def load(preset: str | Preset, slot: str, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32) -> Any:
    """Load (or reuse) the object in ``slot`` of ``preset`` on ``device`` in ``dtype``.

    Fails fast, with one line naming the model, where it was looked for and the fix, when
    weights or an optional package are missing; never touches the network.
    """
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    comp = p.component(slot)
    dev = torch.device(device)
    key = (comp.key, str(dev), str(dtype))
    if key in _loaded:
        return _loaded[key]
    missing = comp.missing_packages()
    if missing:
        raise ModelUnavailable(comp.key, "the Python environment",
                               comp.install or f"install {', '.join(missing)} (pip install {' '.join(missing)})")
    files = comp.locate(p.name)
    log.logger.debug("loading %s for %s on %s (%s)", comp.key, slot, dev, dtype)
    try:
        obj = comp.loader(files, dev, dtype)
    except torch.cuda.OutOfMemoryError:
        raise ModelUnavailable(comp.key, str(dev), "not enough GPU memory; use a smaller --batch-size or "
                                                   "--device cpu") from None
    except OvdiffError:
        raise
    except Exception as e:  # a corrupt or foreign file in the cache: each library raises its own kind
        log.logger.debug("loading %s failed", comp.key, exc_info=True)
        fix = (f"delete the cached files and run `ovdiff models download {p.name}`" if comp.sources
               else "see `ovdiff -v` for the traceback")
        raise ModelUnavailable(comp.key, comp.where(), f"loading failed ({' '.join(str(e).split())[:160]}); "
                                                       f"{fix}") from None
    _loaded[key] = obj
    return obj


def clear_cache() -> None:
    """Forget loaded models (frees their memory once no one else holds them)."""
    _loaded.clear()
