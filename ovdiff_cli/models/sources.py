"""Where model weights come from: files in the Hugging Face cache, or a checkpoint at an URL.

Each source answers three questions without the network (``where``, ``locate``) and one with
it (``download``). Downloads fail within seconds when the host cannot be reached: the hub
client's own retries (about half a minute here) are skipped by probing the host first.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ovdiff_cli.errors import ModelUnavailable
from ovdiff_cli.formats.atomic import atomic_open

#: Seconds to wait for a host before declaring it unreachable.
PROBE_TIMEOUT = 5.0


def _probe(url: str, model: str, where: str) -> None:
    """Fail fast with ModelUnavailable when ``url``'s host does not answer."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError as e:
        raise ModelUnavailable(model, where, f"cannot reach {host} to download it ({e.strerror or e}); run "
                                             "`ovdiff models download` where there is internet and copy the "
                                             "cache folder here") from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HubFiles:
    """Files of a Hugging Face repository; each entry may list alternatives (first found wins)."""

    repo_id: str
    files: tuple[str | tuple[str, ...], ...]
    revision: str | None = None

    def where(self) -> str:
        from huggingface_hub import constants

        return f"the Hugging Face cache {constants.HF_HUB_CACHE} (repository {self.repo_id})"

    def _find(self, name: str) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, name, revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def locate(self) -> dict[str, Path] | None:
        """Local path of every file (keyed by the first alternative's name), or None if any is missing."""
        paths: dict[str, Path] = {}
        for entry in self.files:
            alternatives = (entry,) if isinstance(entry, str) else entry
            hit = next((p for p in map(self._find, alternatives) if p is not None), None)
            if hit is None:
                return None
            paths[alternatives[0]] = hit
        return paths

    def missing(self) -> list[str]:
        """Names of the files not in the cache."""
        out = []
        for entry in self.files:
            alternatives = (entry,) if isinstance(entry, str) else entry
            if all(self._find(a) is None for a in alternatives):
                out.append(" or ".join(alternatives))
        return out

    def download(self, model: str) -> dict[str, Path]:
        """Fetch the missing files into the cache; return every file's local path."""
        from huggingface_hub import constants, hf_hub_download

        found = self.locate()
        if found is not None:
            return found
        if _hub_offline():
            raise ModelUnavailable(model, self.where(), "HF_HUB_OFFLINE is set; unset it to download")
        _probe(constants.ENDPOINT, model, self.where())
        for entry in self.files:
            alternatives = (entry,) if isinstance(entry, str) else entry
            if any(self._find(a) is not None for a in alternatives):
                continue
            errors = []
            for name in alternatives:
                try:
                    hf_hub_download(self.repo_id, name, revision=self.revision)
                    break
                except Exception as e:  # the hub client raises many kinds; report the last one
                    errors.append(f"{name}: {' '.join(str(e).split())[:160]}")
            else:
                raise ModelUnavailable(model, self.where(), "download failed (" + "; ".join(errors) + ")")
        return self.locate() or {}


@dataclass(frozen=True)
class UrlFile:
    """A checkpoint file at an URL, kept in torch's hub cache (``$TORCH_HOME/hub/checkpoints``)."""

    url: str
    filename: str

    def path(self) -> Path:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def where(self) -> str:
        return str(self.path())

    def locate(self) -> dict[str, Path] | None:
        p = self.path()
        return {self.filename: p} if p.is_file() else None

    def missing(self) -> list[str]:
        return [] if self.path().is_file() else [self.filename]

    def download(self, model: str) -> dict[str, Path]:
        """Fetch the file (atomically: a killed download leaves nothing behind)."""
        from ovdiff_cli import log

        found = self.locate()
        if found is not None:
            return found
        _probe(self.url, model, self.where())
        try:
            with urllib.request.urlopen(self.url, timeout=30) as resp, atomic_open(self.path(), "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                blocks = iter(lambda: resp.read(1 << 20), b"")
                for block in log.progress(blocks, desc=self.filename, total=total and -(-total // (1 << 20)),
                                          unit="MiB"):
                    out.write(block)
        except OSError as e:
            raise ModelUnavailable(model, self.where(), f"download from {self.url} failed ({e})") from None
        return {self.filename: self.path()}


Source = HubFiles | UrlFile
