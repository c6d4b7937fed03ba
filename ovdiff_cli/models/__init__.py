"""The only place diffusers, transformers, open_clip or timm are imported (CutLER's detector,
in :mod:`ovdiff_cli.models.rcnn`, needs only torch and torchvision).

Use :func:`load` with a preset name and a slot; register your own models with
:func:`register_preset` / :func:`register_component` or the ``ovdiff.models`` entry-point group
(the contract: docs/plugins.md).
"""

from ovdiff_cli.models.registry import (
    Component,
    Preset,
    get_preset,
    load,
    presets,
    register_component,
    register_preset,
    unregister_preset,
)

__all__ = ["Component", "Preset", "get_preset", "load", "presets", "register_component", "register_preset",
           "unregister_preset"]
