"""Model presets as a stage: what is present, and filling the cache ahead of offline use."""

from __future__ import annotations

from dataclasses import dataclass

from ovdiff_cli import log
from ovdiff_cli.models.registry import Component, Preset, get_preset, presets


@dataclass(frozen=True)
class ComponentStatus:
    """Whether one component of a preset can be loaded here, and why not."""

    preset: str
    slots: tuple[str, ...]
    key: str
    description: str
    where: str
    missing_files: tuple[str, ...]
    missing_packages: tuple[str, ...]
    tiny: bool
    optional: bool
    install: str

    @property
    def ready(self) -> bool:
        return not self.missing_files and not self.missing_packages

    def to_json(self) -> dict[str, object]:
        return {"preset": self.preset, "slots": list(self.slots), "model": self.key,
                "description": self.description, "where": self.where, "ready": self.ready,
                "missing_files": list(self.missing_files), "missing_packages": list(self.missing_packages),
                "tiny": self.tiny, "optional": self.optional}


def _components(preset: Preset) -> list[tuple[Component, tuple[str, ...]]]:
    """Each distinct component once, with every slot it fills."""
    by_key: dict[str, tuple[Component, list[str]]] = {}
    for slot, comp in preset.slots.items():
        by_key.setdefault(comp.key, (comp, []))[1].append(slot)
    return [(c, tuple(slots)) for c, slots in by_key.values()]


def check(names: list[str] | None = None) -> list[ComponentStatus]:
    """Status of every component of the named presets (all presets when None). No network."""
    chosen = [get_preset(n) for n in names] if names else presets()
    return [ComponentStatus(p.name, slots, c.key, c.description, c.where(), tuple(c.missing_files()),
                            tuple(c.missing_packages()), c.tiny, c.optional, c.install)
            for p in chosen for c, slots in _components(p)]


def describe_presets() -> list[dict[str, object]]:
    """Every registered preset with the model in each slot, as JSON-able dicts."""
    return [{"preset": p.name, "description": p.description, "tiny": p.tiny,
             "slots": {slot: {"model": c.key, "description": c.description, "optional": c.optional}
                       for slot, c in p.slots.items()}}
            for p in presets()]


def download(name: str) -> list[ComponentStatus]:
    """Fetch every missing file of preset ``name`` (optional models included) into the local caches.

    Raises ModelUnavailable (within seconds when the hosts cannot be reached) for the first
    component that fails. Missing packages are reported with their install command, not installed.
    """
    preset = get_preset(name)
    for comp, _slots in log.progress(_components(preset), desc=f"models {name}", unit="model"):
        for source in comp.sources:
            if source.missing():
                log.logger.info("downloading %s into %s", comp.key, source.where())
                source.download(comp.key)
        if comp.missing_packages():
            log.logger.warning("%s also needs %s: %s", comp.key, ", ".join(comp.missing_packages()),
                               comp.install or "pip install " + " ".join(comp.missing_packages()))
    return check([name])

