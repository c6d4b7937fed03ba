"""The one path from a preset to a :class:`~ovdiff_cli.models.interfaces.FeatureExtractor`.

`prototype` builds its extractors from the user's options; `segment` from the ``features`` a
prototype or bank file stored, and then insists that the extractor it built gives exactly those
settings (docs/method.md §4.1, docs/design.md §4.1). Both go through
:func:`build_extractor`, so the slot, the precision, the adapter and the type check are decided in
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ovdiff_cli.errors import BadFile, ModelUnavailable
from ovdiff_cli.models import registry
from ovdiff_cli.models.extractors import VARIANT_SLOTS, as_extractor, slot_of
from ovdiff_cli.models.interfaces import FeatureExtractor


@dataclass(frozen=True)
class FeatureOptions:
    """How the built-in extractors read features, and (for a stored file) what they must give.

    ``variant`` picks among an extractor's networks (:data:`~.extractors.VARIANT_SLOTS`; None:
    the default). ``expected``: the ``features`` a prototype or bank file recorded; the built
    extractor's ``settings()`` must equal them.
    """

    sd_layers: str = "default"
    sd_timestep: int = 200
    clip_norm: str = "imagenet"
    clip_readout: str = "keys"
    variant: str | None = None
    expected: Mapping[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def stored(cls, name: str, features: Mapping[str, Any]) -> FeatureOptions:
        """The options that rebuild the extractor ``name`` a file's ``features`` describe."""
        return cls(sd_layers=features.get("layers", cls.sd_layers),
                   sd_timestep=features.get("timestep", cls.sd_timestep),
                   clip_norm=features.get("norm", cls.clip_norm),
                   clip_readout=features.get("readout", cls.clip_readout),
                   variant=stored_variant(name, features.get("model")),
                   expected=dict(features) if features else None)

    def slot(self, name: str) -> str:
        """The preset slot extractor ``name`` loads from with these options."""
        return slot_of(name, self.variant)


def stored_variant(name: str, model: Any) -> str | None:
    """The variant of ``name`` whose network is ``model`` (the model a file's features record):
    the variant whose slot holds a component of that key in some registered preset. None: the default."""
    for variant, slot in VARIANT_SLOTS.get(name, {}).items():
        if any(slot in p.slots and p.slots[slot].key == model for p in registry.presets()):
            return variant
    return None


def network_dtype(name: str, dtype: torch.dtype, vit_dtype: torch.dtype | None) -> torch.dtype:
    """The precision of extractor ``name``'s network: ``dtype`` for SD (docs/method.md §4.1 names half
    precision for SD only), ``vit_dtype`` (default: the same) for the others."""
    return dtype if name == "sd" else (vit_dtype or dtype)


def build_extractor(preset: registry.Preset, name: str, *, options: FeatureOptions = FeatureOptions(),
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    vit_dtype: torch.dtype | None = None, source: Path | None = None) -> FeatureExtractor:
    """The extractor ``name`` of ``preset`` on ``device``, read as ``options`` say.

    ``source``: the file whose ``options.expected`` features the extractor must give (named by
    the error when it gives others).
    """
    slot = options.slot(name)
    net = registry.load(preset, slot, device, network_dtype(name, dtype, vit_dtype))
    ex = as_extractor(name, net, sd_layers=options.sd_layers, sd_timestep=options.sd_timestep,
                      clip_norm=options.clip_norm, clip_readout=options.clip_readout)
    if not isinstance(ex, FeatureExtractor):
        lacks = [m for m in ("name", "dim", "settings", "window_input", "features") if not hasattr(ex, m)]
        raise ModelUnavailable(slot, "the registry", "its object is not a FeatureExtractor"
                               + (f" (it lacks {', '.join(lacks)}; see docs/plugins.md)" if lacks else ""))
    if options.expected and ex.settings() != options.expected:
        raise BadFile(source or Path(name), "was made with other feature settings or models than this preset "
                                            f"gives ({preset.name})",
                      fix="segment with the --models preset the prototypes came from")
    return ex
