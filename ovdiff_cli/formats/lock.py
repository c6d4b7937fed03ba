"""Advisory locks on outputs, so two processes never interleave their work on the same files.

``with locked(target):`` holds ``<target's folder>/.<target name>.lock`` for the block. The lock
file holds the owner's host and pid (for people and messages) and is flock()ed (for exclusion:
the kernel releases a flock when its process dies, however it dies). It is removed on release.

A second process that wants the same target waits, saying once whom it waits for, until the
first releases it; ``OVDIFF_LOCK_TIMEOUT`` (seconds) bounds the wait, after which it fails with
one line. A lock file that nobody holds was left by a process that died (``kill -9``): it is
taken over with a note. Locks are re-entrant within a process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ovdiff_cli import log
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats.atomic import sweep_stale

#: Seconds between attempts while another process holds the lock.
POLL = 0.2

_held: dict[Path, int] = {}


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target`` (a file or a folder): a hidden file beside it."""
    t = Path(os.path.abspath(target))
    return t.parent / f".{t.name}.lock"


def _timeout() -> float | None:
    raw = os.environ.get("OVDIFF_LOCK_TIMEOUT", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise BadInput(f"OVDIFF_LOCK_TIMEOUT={raw!r} is not a number of seconds",
                       "set it to e.g. 0 (fail at once) or 600, or unset it to wait")
    return value


def _owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").split()
    except OSError:
        return ""
    return f"process {text[1]} on {text[0]}" if len(text) >= 2 else ""


def _acquire(path: Path, target: Path, timeout: float | None, made: list[Path]) -> int:
    """Open and flock the lock file; ``made`` collects the folders created for it."""
    start = time.monotonic()
    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            # the holder we waited for removed the folder it had made (it was empty): make it again
            made += [f for f in _make_parents(path.parent) if f not in made]
            continue
        except OSError as e:
            raise BadFile(path.parent, f"cannot write here ({e.strerror or e})",
                          fix="choose a writable folder with -o") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            owner = _owner(fd) or "another process"
            os.close(fd)
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise BadFile(target, f"is being written by {owner} (lock {path.name})",
                              fix="wait for it to finish or choose another -o; OVDIFF_LOCK_TIMEOUT sets how long "
                                  "to wait") from None
            if not said:
                log.logger.info("%s is being written by %s; waiting for it", target, owner)
                said = True
            time.sleep(POLL)
            continue
        # We hold a flock, but on the file this path names now? The previous owner may have
        # unlinked it between our open() and flock(): then try again on the new file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        left = _owner(fd)
        if left:
            log.logger.info("took over the lock of %s, left by %s, which is gone", target, left)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        return fd


@contextlib.contextmanager
def locked(target: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of ``target`` for the block (see the module docstring).

    The folder holding the lock file is created when missing and removed again on release when
    it is still empty, so a run that fails before writing leaves nothing behind.
    """
    path = lock_path(target)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    timeout = _timeout()
    made = _make_parents(path.parent)
    try:
        fd = _acquire(path, Path(target), timeout, made)
    except BaseException:
        _remove_empty(made)
        raise
    _held[path] = 1
    try:
        sweep_stale(path.parent)
        _sweep_locks(path.parent)
        if Path(target).is_dir():
            sweep_stale(Path(target))
        yield
    finally:
        del _held[path]
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it, so nobody takes a lock on a removed file
        os.close(fd)
        _remove_empty(made)


_swept: set[Path] = set()


def _sweep_locks(folder: Path) -> None:
    """Remove lock files in ``folder`` that nobody holds (left by killed processes), once per process.

    Safe against a process that opened such a file and is about to flock it: it finds the path
    gone or naming another file after its flock, and starts again (see :func:`_acquire`).
    """
    if folder in _swept:
        return
    _swept.add(folder)
    for p in folder.glob(".*.lock"):
        if p in _held:
            continue
        try:
            fd = os.open(p, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(p).st_ino == os.fstat(fd).st_ino:
                os.unlink(p)
        except OSError:
            pass  # held by a live process, or already gone
        finally:
            os.close(fd)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest first."""
    made = []
    probe = folder
    while not probe.exists():
        made.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadFile(folder, f"cannot be created ({e.strerror or e})", fix="choose a writable folder with -o") from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            break
