"""Atomic writes: a temporary file beside the target, flushed, then renamed over it.

A run killed midway leaves either the old file or none, never a half-written one; the temporary
file is removed on any exception. Readers ignore the ``.*.tmp`` names used here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ovdiff_cli.errors import BadFile

TMP_SUFFIX = ".tmp"

# Read once: querying the umask means setting it, which is process-wide and racy in threads.
_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


_swept: set[Path] = set()


def sweep_stale(folder: Path) -> None:
    """Remove temporary files left in ``folder`` by killed writers on this host.

    Once per folder and process: a folder of thousands of outputs is listed once, not per write.
    """
    key = folder.resolve()
    if key in _swept or not folder.is_dir():
        return
    _swept.add(key)
    pattern = re.compile(rf"^\..+\.{re.escape(_HOST)}\.(\d+)\.[^.]*{re.escape(TMP_SUFFIX)}$")
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    For writers that insist on opening the file themselves. The temporary name carries the
    host and process id, so a later run writing into the same folder removes what a killed one
    left.
    """
    target = Path(path)
    if target.is_dir():
        raise BadFile(target, "is a folder, cannot write a file there", fix="choose another output path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_HOST}.{os.getpid()}.", suffix=TMP_SUFFIX,
                                        dir=target.parent)
    except OSError as e:
        raise BadFile(target.parent, f"cannot write here ({e.strerror or e})",
                      fix="choose a writable folder with -o") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file owner-only, and writers that recreate it (safetensors does) may
        # too: give it the mode plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BadFile(target, f"could not be written ({e.strerror or e})",
                      fix="check the free space and permissions of its folder") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), not {mode!r}")
    with atomic_path(path) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, for the ``inputs`` provenance in metadata."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise BadFile(path, f"cannot read ({e.strerror or e})") from None
    return h.hexdigest()
