"""The one rule for reruns: reuse an output, make it (again), or refuse.

Every stage asks :func:`decide` before it makes an output, with what the output would be made
from now:

- ``inputs``: content digests (SHA-256) of the files it is made from: images, support sets,
  masks, prototype files, banks. A path never stands for content.
- ``settings``: everything else that shapes it: the stage's settings, the models, the
  vocabulary. Each key is compared with the same key of the recorded metadata.

and the answer follows one rule (README, "Reruns, reuse and --overwrite"):

1. No file there: make it.
2. A file that ovdiff did not write (a user's photo, a foreign PNG or safetensors file), or
   one of another kind than the output (a label map where an overlay goes): refuse, with or
   without ``--overwrite``. ovdiff never replaces or deletes what it did not make.
3. ``--overwrite``: make it again.
4. Other settings: refuse, naming the keys that differ and a fix that exists on the command
   that is running (``--overwrite`` or another ``-o``; under ``ovdiff run``, another ``-o`` or
   the single stage with ``--overwrite``).
5. Same settings, other inputs (an image edited in place, another image of the same name, a
   resampled support set): the output is stale; make it again.
6. Same settings and inputs: reuse it.

Values are compared as JSON, the form in which they are recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ovdiff_cli import log
from ovdiff_cli.errors import BadFile

#: The stage command whose ``--overwrite`` a conflict message offers, when `ovdiff run` runs it.
_RUN_STAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("ovdiff_in_run", default=False)

_said_stale: set[str] = set()
STALE = log.Repeated(lambda paths: log.counted(paths, "{item}: its inputs changed, so it is made again",
                                               "{n} files' inputs changed, so they are made again (first: {first})"))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,63}")  # fullmatch: "$" would let "sd\n" through


@contextlib.contextmanager
def within_run() -> Iterator[None]:
    """Stages called inside this block belong to `ovdiff run`, which has no ``--overwrite``."""
    token = _RUN_STAGE.set(True)
    try:
        yield
    finally:
        _RUN_STAGE.reset(token)


#: Commands without ``-o`` (attribute and mask write into the support set, score only its --plot)
#: and without ``--overwrite``: a fix names only options the running command has.
_NO_OUTPUT = frozenset({"attribute", "mask", "score"})
_NO_OVERWRITE = frozenset({"explain", "score"})


def conflict_fix(stage: str) -> str:
    """The way out of a settings conflict that exists on the running command."""
    if _RUN_STAGE.get():
        return f"choose another -o for `ovdiff run`, or redo this stage alone with `ovdiff {stage} --overwrite`"
    ways = [w for w, has in (("pass --overwrite to replace it", stage not in _NO_OVERWRITE),
                             ("choose another -o", stage not in _NO_OUTPUT)) if has]
    return ", or ".join(ways) or "move the file away"


def _foreign_fix(stage: str | None) -> tuple[str, str]:
    """(what --overwrite does not change, the fix) for a file that is not ovdiff's to replace."""
    if _RUN_STAGE.get():
        return "", "choose another -o for `ovdiff run`, or move the file away"
    overwrite = " (not even with --overwrite)" if stage not in _NO_OVERWRITE else ""
    if stage not in _NO_OUTPUT:
        return overwrite, "choose another -o, or move the file away"
    if stage == "score":  # score writes only its picture, where --plot says
        return overwrite, "choose another --plot path, or move the file away"
    return overwrite, "move the file away"


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON metadata (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True, ensure_ascii=False))


def ovdiff_schema(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, Any]]:
    """(schema, metadata) of a file ovdiff wrote; (None, {}) for any other file.

    Safetensors files carry the schema in their header, PNG files in the ``ovdiff`` text chunk
    (a JSON object with a ``schema`` entry), JSON Lines files (classify's candidates) in every
    record. A file that cannot be read as any of them is not ovdiff's.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return None, {}
    if head == _PNG_SIGNATURE:
        return _png_schema(p)
    found = _safetensors_schema(p)
    if found[0] is None and head[:1] == b"{":  # second: the format lets a header length start with "{"
        return _json_lines_schema(p)
    return found


def _png_schema(p: Path) -> tuple[str | None, dict[str, Any]]:
    from PIL import Image

    try:
        with Image.open(p) as im:  # text chunks before the image data are read by open()
            raw = im.info.get("ovdiff")
            if raw is None:
                im.load()  # chunks after the image data appear only once it is decoded
                raw = im.info.get("ovdiff")
        meta = json.loads(raw) if raw is not None else None
    except Exception:  # a broken PNG is not one ovdiff finished writing
        return None, {}
    if not isinstance(meta, dict) or not str(meta.get("schema", "")).startswith("ovdiff."):
        return None, {}
    return str(meta["schema"]), meta


def _safetensors_schema(p: Path) -> tuple[str | None, dict[str, Any]]:
    try:
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None, {}
            header = json.loads(f.read(n))
        extra = header.get("__metadata__") or {}
        schema = extra.get("schema", "")
        meta = json.loads(extra.get("meta", "{}"))
    except Exception:
        return None, {}
    if not isinstance(schema, str) or not schema.startswith("ovdiff.") or not isinstance(meta, dict):
        return None, {}
    return schema, meta


def _json_lines_schema(p: Path) -> tuple[str | None, dict[str, Any]]:
    """The one schema every record of a JSON Lines file names; the records carry their own provenance."""
    try:
        records = [json.loads(line) for line in p.read_text(encoding="utf-8").split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, {}
    schemas = {r.get("schema") if isinstance(r, dict) else None for r in records}
    if len(schemas) != 1:
        return None, {}
    schema = schemas.pop()
    if not isinstance(schema, str) or not schema.startswith("ovdiff."):
        return None, {}
    return schema, {}


def _kind(schema: str) -> str:
    return schema.rpartition("/")[0] or schema


def check_replaceable(path: str | os.PathLike[str], schema: str, stage: str | None = None) -> dict[str, Any] | None:
    """The metadata of the ovdiff file of ``schema``'s kind at ``path``; None when nothing is there.

    Raises :class:`BadFile` for a folder, a file ovdiff did not write, or an ovdiff file of
    another kind: those are never overwritten (rule 2). ``stage`` (the running command) tailors
    the fix to the options it has.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return None
    overwrite, fix = _foreign_fix(stage)
    if p.is_dir():
        raise BadFile(p, "is a folder where ovdiff would write a file", fix=fix)
    found, meta = ovdiff_schema(p)
    if found is None:
        raise BadFile(p, f"exists and was not written by ovdiff, so ovdiff will not replace it{overwrite}", fix=fix)
    if _kind(found) != _kind(schema):
        raise BadFile(p, f"is an ovdiff {found} file where an {schema} file would go, so ovdiff will not "
                         f"replace it{overwrite}", fix=fix)
    return meta


def with_assumed(old: Mapping[str, Any], assumed: Mapping[str, Any] | None) -> dict[str, Any]:
    """``old`` (recorded metadata) with ``assumed``'s values where it lacks them, nested alike.

    A setting recorded only since some version (prototype's ``settings.kmeans``) was still made
    one way before: files written earlier compare as made that way instead of conflicting.
    """
    merged = dict(old)
    for k, v in (assumed or {}).items():
        if k not in merged:
            merged[k] = with_assumed({}, v) if isinstance(v, Mapping) else v  # plain dicts, as JSON has
        elif isinstance(v, Mapping) and isinstance(merged[k], Mapping):
            merged[k] = with_assumed(merged[k], v)
    return merged


def compare(path: str | os.PathLike[str], old: Mapping[str, Any], *, stage: str, inputs: Mapping[str, Any],
            settings: Mapping[str, Any], overwrite: bool = False, assumed: Mapping[str, Any] | None = None) -> bool:
    """Rules 3–6 for a file whose recorded metadata is ``old``: True to reuse it, False to make it.

    ``stage`` names the command (e.g. ``segment``) for the fix of a conflict; ``assumed``: what
    files written before a setting was recorded were made with (:func:`with_assumed`).
    """
    if overwrite:
        return False
    old = with_assumed(old, assumed)
    differ = [d for k, v in settings.items() for d in _differences(k, as_json(old.get(k)), as_json(v))]
    if differ:
        shown = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise BadFile(path, f"was made with other {shown}", fix=conflict_fix(stage))
    if as_json(old.get("inputs")) != as_json(dict(inputs)):
        if str(path) not in _said_stale:  # a stage may ask twice (before its models load, then under the lock)
            _said_stale.add(str(path))
            log.repeat(STALE, path)
        return False
    return True


def _differences(key: str, old: Any, new: Any) -> list[str]:
    """The dotted names of the values that differ between ``old`` and ``new`` (e.g. ``settings.pamr``)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(f"{key}.{k}", old.get(k), new.get(k))]
    return [key]


def decide(path: str | os.PathLike[str], schema: str, *, stage: str, inputs: Mapping[str, Any],
           settings: Mapping[str, Any], overwrite: bool = False, assumed: Mapping[str, Any] | None = None) -> bool:
    """The whole rule for one output file: True to reuse it, False to make it; raises to refuse."""
    old = check_replaceable(path, schema, stage)
    if old is None:
        return False
    return compare(path, old, stage=stage, inputs=inputs, settings=settings, overwrite=overwrite, assumed=assumed)


def identity(inputs: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata entries that :func:`decide` compares, to merge into what a stage records."""
    return {**settings, "inputs": dict(inputs)}


def safe_name(value: Any, path: str | os.PathLike[str], field: str, made_by: str | None = None) -> str:
    """A name read from a file's metadata that may become part of a file name, or a BadFile.

    Names ovdiff gives (extractors, slugs) are short words of letters, digits, ``_``, ``+``
    and ``-``; anything else (a slash, ``..``, a NUL, 200 characters) came from elsewhere.
    """
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 40 else f"{str(value)[:37]}..."
        raise BadFile(path, f"names the {field} {shown!r}, which is not a name ovdiff gives", made_by)
    return value
