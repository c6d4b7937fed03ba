"""Vocabularies: the classes a user names, their prompts and thing/stuff labels.

Three spellings (``--vocab``):

- a built-in benchmark vocabulary: ``voc``, ``context``, ``coco-object`` (docs/method.md §10.2);
- a file, one class per line: ``name[<TAB>prompt[<TAB>thing|stuff]]``; ``#`` starts a comment,
  blank lines are skipped;
- an inline comma-separated list: ``cat,dog,sky``.

Label 0 is always background and is never part of a vocabulary; class ``i`` of the vocabulary is
label ``i`` (1-based). A class's prompt defaults to its name, remapped by the prompt overlay of
docs/method.md §10.1 unless disabled; its kind defaults to the thing/stuff table (§10.3).
Class names become folder and file slugs (at most 60 bytes: long names keep a readable prefix and
a digest), which must be unique.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats.thingstuff import Kind, kind_of

#: Most classes a vocabulary may have: labels 1..254 (0 = background, 255 = ignore).
MAX_CLASSES = 254

#: docs/method.md §10.1: prompt text for class keys that SD and CLIP read ambiguously.
PROMPT_OVERLAY: dict[str, str] = {
    "tank": "liquid tank",
    "blind": "window blinds",
    "hood": "cooker hood",
    "ashcan": "wastebin",
    "case": "shop case",
    "keyboard": "computer keyboard",
    "apparel": "clothing",
}

_VOC = ("airplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person "
        "pottedplant sheep sofa train monitor").split()

_CONTEXT = ("airplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car "
            "cat ceiling chair cloth computer cow cup curtain dog door fence floor flower food grass "
            "ground horse keyboard light motorbike mountain mouse person plate platform plant road "
            "rock sheep shelves sidewalk sign sky snow sofa table track train tree truck monitor wall "
            "water window wood").split()

_COCO_OBJECT = (
    "person|bicycle|car|motorcycle|airplane|bus|train|truck|boat|traffic light|fire hydrant|stop sign|"
    "parking meter|bench|bird|cat|dog|horse|sheep|cow|elephant|bear|zebra|giraffe|backpack|umbrella|"
    "handbag|tie|suitcase|frisbee|skis|snowboard|sports ball|kite|baseball bat|baseball glove|"
    "skateboard|surfboard|tennis racket|bottle|wine glass|cup|fork|knife|spoon|bowl|banana|apple|"
    "sandwich|orange|broccoli|carrot|hot dog|pizza|donut|cake|chair|couch|potted plant|bed|"
    "dining table|toilet|tv|laptop|mouse|remote|keyboard|cell phone|microwave|oven|toaster|sink|"
    "refrigerator|book|clock|vase|scissors|teddy bear|hair drier|toothbrush").split("|")

#: Built-in vocabularies: name → (class keys, explicit prompts). Kinds come from the table.
BUILTIN: dict[str, tuple[Sequence[str], dict[str, str]]] = {
    "voc": (_VOC, {"pottedplant": "potted plant"}),
    "context": (_CONTEXT, {}),
    "coco-object": (_COCO_OBJECT, {}),
}


#: Longest slug in UTF-8 bytes. Slugs name folders and files (``<slug>.<extractor>.safetensors``,
#: hidden temporaries with host and pid around them), which must stay well under the 255 bytes
#: a file name may have on common file systems.
MAX_SLUG_BYTES = 60

#: Bytes of a long name's readable prefix; a ``-`` and 10 hex digits of its digest follow.
_PREFIX_BYTES = MAX_SLUG_BYTES - 11


def slugify(name: str) -> str:
    """Folder/file name for a class: casefolded, runs of non-word characters become ``-``.

    ``"Donut with chocolate glaze"`` → ``"donut-with-chocolate-glaze"``. A slug longer than
    :data:`MAX_SLUG_BYTES` is cut to a readable prefix (at a word boundary when one is near)
    plus ``-`` and the first 10 hex digits of the SHA-256 of the whole slug, so two long names
    that differ only past the cut keep distinct slugs, and names with equal slugs still collide.
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    slug = re.sub(r"[\W_]+", "-", text).strip("-")
    raw = slug.encode("utf-8")
    if len(raw) <= MAX_SLUG_BYTES:
        return slug
    prefix = raw[:_PREFIX_BYTES].decode("utf-8", "ignore")  # never half a character
    cut = prefix.rfind("-")
    if cut >= _PREFIX_BYTES // 2:  # end at a word boundary unless that loses half the prefix
        prefix = prefix[:cut]
    return f"{prefix.strip('-')}-{hashlib.sha256(raw).hexdigest()[:10]}"


@dataclass(frozen=True)
class VocabClass:
    """One class: its key (name), prompt phrase, thing/stuff kind and slug."""

    name: str
    prompt: str
    kind: Kind
    slug: str

    @property
    def is_stuff(self) -> bool:
        return self.kind == "stuff"


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes; class ``i`` (0-based here) has label ``i + 1``."""

    name: str
    classes: tuple[VocabClass, ...]

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def label_of(self, name: str) -> int:
        """The label (1-based) of a class key."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i + 1
        raise BadInput(f"class {name!r} is not in the vocabulary {self.name}", f"its classes: {', '.join(self.names)}")

    def to_meta(self) -> dict[str, Any]:
        """JSON-able form stored in file metadata."""
        return {"name": self.name, "classes": [[c.name, c.prompt, c.kind] for c in self.classes]}

    def digest(self) -> str:
        """SHA-256 (hex) of the classes, prompts and kinds: two inline vocabularies share a name, not this."""
        import json

        return hashlib.sha256(json.dumps(self.to_meta(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_meta`."""
        return build(meta["name"], [(n, p, k) for n, p, k in meta["classes"]], overlay=False)


def build(name: str, entries: Iterable[tuple[str, str | None, str | None]], overlay: bool = True,
          where: str | None = None) -> Vocabulary:
    """Make a vocabulary from ``(name, prompt or None, kind or None)`` entries, validated.

    ``where`` names the source (a file) in error messages.
    """
    src = where or f"vocabulary {name}"
    classes: list[VocabClass] = []
    by_slug: dict[str, str] = {}
    for key, prompt, kind in entries:
        key = " ".join(key.split())
        if not key:
            raise BadInput(f"{src}: a class name is empty", "give every class a name")
        slug = slugify(key)
        if not slug:
            raise BadInput(f"{src}: class name {key!r} has no letter or digit to name its files",
                           "use a name with letters or digits")
        if slug in by_slug:
            raise BadInput(f"{src}: classes {by_slug[slug]!r} and {key!r} share the file name {slug!r}",
                           "rename one of them")
        by_slug[slug] = key
        phrase = " ".join(prompt.split()) if prompt is not None else None
        if phrase == "":
            raise BadInput(f"{src}: class {key!r} has an empty prompt", "give a prompt or leave the column out")
        if phrase is None:
            # Lookups are case-insensitive, as for the thing/stuff table.
            phrase = PROMPT_OVERLAY.get(key.casefold(), key) if overlay else key
        if kind is None:
            kind = kind_of(key)
        if kind not in ("thing", "stuff"):
            raise BadInput(f"{src}: class {key!r} has kind {kind!r}", "write thing or stuff")
        classes.append(VocabClass(key, phrase, kind, slug))  # type: ignore[arg-type]
    if not classes:
        raise BadInput(f"{src}: the vocabulary is empty", "name at least one class")
    if len(classes) > MAX_CLASSES:
        raise BadInput(f"{src}: {len(classes)} classes, at most {MAX_CLASSES} fit in a label map",
                       "split the vocabulary")
    return Vocabulary(name, tuple(classes))


def read_file(path: str | Path, overlay: bool = True) -> Vocabulary:
    """Read a vocabulary file (see the module docstring for the format)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except FileNotFoundError:
        raise BadFile(p, "does not exist", fix="give a vocabulary file, a built-in (voc, context, coco-object) "
                                               "or a comma list like cat,dog") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadFile(p, f"is not a readable UTF-8 text file ({e})", fix="save it as UTF-8 text") from None
    entries: list[tuple[str, str | None, str | None]] = []
    for lineno, raw in enumerate(text.split("\n"), 1):  # \n only: other breaks are part of a name
        raw = raw.removesuffix("\r")
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) > 3:
            raise BadFile(p, f"line {lineno} has {len(cols)} tab-separated columns, at most 3",
                          fix="write name<TAB>prompt<TAB>thing|stuff")
        name = cols[0]
        prompt = cols[1] if len(cols) > 1 and cols[1] else None
        kind = cols[2].lower() if len(cols) > 2 and cols[2] else None
        if kind is not None and kind not in ("thing", "stuff"):
            raise BadFile(p, f"line {lineno}: kind {cols[2]!r} is not thing or stuff", fix="write thing or stuff")
        entries.append((name, prompt, kind))
    try:
        return build(p.stem, entries, overlay=overlay, where=str(p))
    except BadInput as e:
        raise BadFile(p, e.message.removeprefix(f"{p}: "), fix=e.fix) from None


def builtin(name: str, overlay: bool = True) -> Vocabulary:
    """A built-in benchmark vocabulary by name."""
    try:
        keys, prompts = BUILTIN[name]
    except KeyError:
        raise BadInput(f"no built-in vocabulary {name!r}", f"choose one of {', '.join(BUILTIN)}") from None
    return build(name, [(k, prompts.get(k), None) for k in keys], overlay=overlay)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the name cannot be a file's (a long class list is too long a name)."""
    try:
        return path.is_file()
    except OSError:
        return False


def parse(spec: str, overlay: bool = True) -> Vocabulary:
    """Resolve a ``--vocab`` value: built-in name, existing or path-like file, or comma list."""
    text = spec.strip()
    if text in BUILTIN:
        return builtin(text, overlay)
    if _is_file(Path(spec)):  # a file is taken by its name verbatim, spaces included
        return read_file(Path(spec), overlay)
    path = Path(text)
    looks_like_path = "/" in text or "\\" in text or path.suffix.lower() in (".txt", ".tsv", ".vocab")
    if _is_file(path) or (looks_like_path and "," not in text):
        return read_file(path, overlay)
    if "," not in text and text:
        # A lone word is far more often a misspelt built-in or a missing file than a vocabulary
        # of one class; the trailing comma says "a list" explicitly.
        raise BadInput(f"--vocab {text!r} is neither a file nor a built-in vocabulary",
                       f"choose one of {', '.join(BUILTIN)}, give a file, or write '{text},' for a one-class list")
    names = [n.strip() for n in text.split(",")]
    if len(names) > 1 and not names[-1]:
        names.pop()  # "cat," is the one-class list
    if not any(names):
        raise BadInput("--vocab is empty", "give a file, a built-in (voc, context, coco-object) or a list like cat,dog")
    if any(not n for n in names):
        raise BadInput(f"--vocab {spec!r} has an empty name between commas", "remove the extra comma")
    return build("inline", [(n, None, None) for n in names], overlay=overlay)


def from_words(words: Sequence[str], overlay: bool = True) -> Vocabulary:
    """A vocabulary from words given as command arguments (``ovdiff sample cat "hot dog"``)."""
    return build("words", [(w, None, None) for w in words], overlay=overlay)
