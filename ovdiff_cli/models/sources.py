"""Where model weights come from: files in the Hugging Face cache, or a checkpoint at an URL.

Each source answers three questions without the network (``where``, ``locate``) and one with
it (``download``). Downloads fail within seconds when the host cannot be reached: the hub
client's own retries (about half a minute here) are skipped by probing the host first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovdiff_cli.errors import BadFile, ModelUnavailable

#: Seconds to wait for a host before declaring it unreachable.
PROBE_TIMEOUT = 5.0

#: Seconds a checkpoint download may wait on one read before it fails.
DOWNLOAD_TIMEOUT = 30.0


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
            alternatives = _alternatives(entry)
            hit = next((p for p in map(self._find, alternatives) if p is not None), None)
            if hit is None:
                return None
            paths[alternatives[0]] = hit
        return paths

    def missing(self) -> list[str]:
        """Names of the files not in the cache."""
        return [" or ".join(_alternatives(e)) for e in self.files if self._missing(e)]

    def download(self, model: str) -> dict[str, Path]:
        """Fetch the missing files into the cache; return every file's local path.

        One ``snapshot_download`` per round of alternatives: first every entry's first choice, then
        the second choice of the entries the repository did not have, and so on (first found wins).
        """
        from huggingface_hub import constants, snapshot_download

        found = self.locate()
        if found is not None:
            return found
        if _hub_offline():
            raise ModelUnavailable(model, self.where(), "HF_HUB_OFFLINE is set; unset it to download")
        _probe(constants.ENDPOINT, model, self.where())
        for choice in range(max(len(_alternatives(e)) for e in self.files)):
            wanted = [_alternatives(e)[choice] for e in self.files
                      if choice < len(_alternatives(e)) and self._missing(e)]
            if not wanted:
                break
            try:
                snapshot_download(self.repo_id, revision=self.revision, allow_patterns=wanted)
            except Exception as e:  # the hub client raises many kinds; one line names the cause
                raise ModelUnavailable(model, self.where(),
                                       f"download failed ({' '.join(str(e).split())[:160]})") from None
        absent = self.missing()
        if absent:
            # The hub client can also come back empty-handed without an error (a refused token, a
            # connection lost after the probe, with an older snapshot on disk): name both causes.
            raise ModelUnavailable(model, self.where(),
                                   f"download failed (not in {self.repo_id}: {'; '.join(absent)}; or the hub "
                                   "refused or dropped the request: check the name, HF_TOKEN and the connection)")
        return self.locate() or {}

    def _missing(self, entry: str | tuple[str, ...]) -> bool:
        return all(self._find(a) is None for a in _alternatives(entry))


def _alternatives(entry: str | tuple[str, ...]) -> tuple[str, ...]:
    """The names one entry of :attr:`HubFiles.files` may have, in order of preference."""
    return (entry,) if isinstance(entry, str) else entry


@dataclass(frozen=True)
class UrlFile:
    """A checkpoint file at an URL, kept in torch's hub cache (``$TORCH_HOME/hub/checkpoints``)."""

    url: str
    filename: str
    sha256_prefix: str | None = None  # leading hex digits of the file's SHA-256, checked after download

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
        """Fetch the file with torch's own downloader: into a ``.partial`` file beside the target,
        renamed when complete (a failed download leaves nothing behind), checked against
        :attr:`sha256_prefix` when one is given."""
        import torch.hub

        from ovdiff_cli import log

        found = self.locate()
        if found is not None:
            return found
        _probe(self.url, model, self.where())
        folder = self.path().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadFile(folder, f"cannot write here ({e.strerror or e})",
                          fix="set TORCH_HOME to a writable folder") from None
        # Bars as log.progress shows them: not when quiet, not when stderr is not a terminal.
        bar = log.verbosity() >= 0 and sys.stderr.isatty()
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT):
                torch.hub.download_url_to_file(self.url, str(self.path()), hash_prefix=self.sha256_prefix,
                                               progress=bar)
        except (OSError, RuntimeError) as e:  # RuntimeError: the hash does not match
            raise ModelUnavailable(model, self.where(), f"download from {self.url} failed ({e})") from None
        return {self.filename: self.path()}


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give new sockets a timeout: torch's downloader opens its connection without one, so a host
    that stops answering midway would hang the download for ever. The default is process-wide:
    sockets other threads open meanwhile get it too (ovdiff downloads from one thread)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


Source = HubFiles | UrlFile
