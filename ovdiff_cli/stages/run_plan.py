"""What `ovdiff run` will write, and its look ahead at what an earlier run left there.

This module imports no torch and loads no model, so the command checks every file it would reuse
or refuse within a second or two of starting, before the imports and the sampling that take
tens of seconds (a rerun with another ``-n`` used to find the conflict only after drawing the
classes that came first). The stages check again, fully, as they go: the look ahead compares
only the settings known without the models, so it never refuses what a stage would reuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovdiff_cli.core.settings import (DEFAULT_EXTRACTORS, AttributeSettings, BankSettings, MaskSettings,
                                      PROTOTYPE_SETTINGS_BEFORE, PrototypeSettings, SampleSettings,
                                      SegmentSettings)
from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.candidates import CANDIDATES_SCHEMA
from ovdiff_cli.formats.labelmap import LABELMAP_SCHEMA, OVERLAY_SCHEMA
from ovdiff_cli.formats.schemas import (ATTRIBUTION, BANK, CROSSATTN, CROSSATTN_PART, IMAGE_SCHEMA, MASK_SCHEMA,
                                        PROTOTYPES)
from ovdiff_cli.formats.vocabulary import Vocabulary, slugify


@dataclass(frozen=True)
class RunSettings:
    """The settings of every stage that `run` chains."""

    sample: SampleSettings = SampleSettings()
    mask: MaskSettings = MaskSettings()
    proposer: str = "auto"
    extractors: tuple[str, ...] = DEFAULT_EXTRACTORS
    prototype: PrototypeSettings = PrototypeSettings()
    bank: BankSettings = BankSettings()
    segment: SegmentSettings = SegmentSettings()
    prefilter: bool = True
    batch_size: int = 8
    overlay: bool = False


#: Longest readable part of a vocabulary folder's name, in bytes; ``-`` and 8 hex digits follow.
MAX_PREFIX_BYTES = 40

#: Names the parser gives vocabularies that have none of their own (``--vocab cat,dog``, words).
_UNNAMED = frozenset({"inline", "words"})

#: The vocabulary's classes, in the vocabulary-file format, inside its folder.
CLASS_LIST = "classes.txt"


def folder_prefix(vocab: Vocabulary) -> str:
    """The readable part of a vocabulary folder's name: the vocabulary's own name (``voc``, a
    file's stem) or, for a list given inline, its first class names: ``cat-donut-with-chocolate-glaze``.

    At most :data:`MAX_PREFIX_BYTES` bytes, cut at a ``-`` when one is in the second half.
    """
    slug = slugify(vocab.name) if vocab.name not in _UNNAMED else "-".join(c.slug for c in vocab.classes)
    raw = slug.encode("utf-8")
    if len(raw) > MAX_PREFIX_BYTES:
        slug = raw[:MAX_PREFIX_BYTES].decode("utf-8", "ignore")  # never half a character
        cut = slug.rfind("-")
        if cut >= MAX_PREFIX_BYTES // 2:
            slug = slug[:cut]
    return slug.strip("-") or "vocabulary"


def vocabulary_folder(work: Path, vocab: Vocabulary) -> Path:
    """``<work>/vocabularies/<prefix>-<first 8 hex digits of the digest>``: one per distinct vocabulary.

    Before the prefix named classes, every inline list's folder was ``inline-<digest>``: a work
    folder that holds one for this vocabulary (and not the new name) keeps using it, so its
    banks, candidates and label maps are still reused.
    """
    digest = vocab.digest()[:8]
    here = work / "vocabularies" / f"{folder_prefix(vocab)}-{digest}"
    earlier = work / "vocabularies" / f"{slugify(vocab.name) or 'vocabulary'}-{digest}"
    return earlier if earlier != here and earlier.is_dir() and not here.exists() else here


def class_list(vocab: Vocabulary) -> str:
    """The vocabulary as a vocabulary file (``name<TAB>prompt<TAB>kind`` a line, formats/vocabulary.py)."""
    head = (f"# the classes of vocabulary {vocab.name!r} (SHA-256 {vocab.digest()[:16]}…), label i on line i;\n"
            "# a vocabulary file: `--vocab` reads it\n")
    return head + "".join(f"{c.name}\t{c.prompt}\t{c.kind}\n" for c in vocab.classes)


def write_class_list(folder: Path, vocab: Vocabulary) -> Path:
    """``folder/classes.txt`` (see :func:`class_list`), written when it is not already what it should be."""
    from ovdiff_cli.formats.atomic import write_text

    path = folder / CLASS_LIST
    text = class_list(vocab)
    try:
        found: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        found = None
    except (OSError, UnicodeDecodeError):
        found = ""
    if found is not None and not found.startswith("# the classes of vocabulary "):
        raise BadFile(path, "is not a class list ovdiff wrote, so it is not replaced",
                      fix="move the file away, or choose another -o for `ovdiff run`")
    if found != text:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    return path


# -- the look ahead ----------------------------------------------------------------------------------

def _known_differences(key: str, old: Any, known: Any) -> list[str]:
    """The dotted names where ``old`` (recorded) differs from ``known``, looking only at the keys
    ``known`` has: the settings that need a model to know (prompt tokens, image size) are left out."""
    if isinstance(known, dict):
        if not isinstance(old, dict):
            return [key]
        return [d for k, v in sorted(known.items()) for d in _known_differences(f"{key}.{k}", old.get(k), v)]
    if isinstance(known, KeysOf):
        have = set(old) if isinstance(old, dict) else set()
        return [f"{key}.{k}" for k in sorted(have ^ known.keys)]
    return [] if provenance.as_json(old) == provenance.as_json(known) else [key]


@dataclass(frozen=True)
class KeysOf:
    """A recorded mapping whose keys (not values) are known ahead: the extractors of a label map."""

    keys: frozenset[str]


def _check(path: Path, schema: str, stage: str, known: dict[str, Any], record: str | None = None,
           shown: Path | None = None, assumed: Mapping[str, Any] | None = None) -> None:
    """Refuse now what ``stage`` would refuse at ``path``: a file ovdiff may not replace, or one made
    with other settings among ``known`` (under the metadata entry ``record`` when given). ``shown``
    is the path the stage names in its error (a support set's folder)."""
    old = provenance.check_replaceable(path, schema, stage)
    if old is None:
        return
    if record is not None:
        old = old.get(record)
        if not isinstance(old, dict):
            return  # the stage itself says what is missing
    old = provenance.with_assumed(old, assumed)
    differ = [d for k, v in sorted(known.items()) for d in _known_differences(k, old.get(k), v)]
    if differ:
        text = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise BadFile(shown or path, f"was made with other {text}", fix=provenance.conflict_fix(stage))


def _numbered_pngs(folder: Path) -> list[Path]:
    """``folder/00000.png``… as the stages name them (hidden temporaries and other names left to them)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name[:5].isdigit() and p.name.endswith(".png") and len(p.name) == 9)


def check_ahead(vocab: Vocabulary, images: Sequence[Path], *, work: Path, preset: str,
                settings: RunSettings = RunSettings()) -> None:
    """Raise the first conflict `run` would meet, in stage order, before anything is drawn.

    Support sets (images, recorded attention, batches of an interrupted run), attribution,
    masks, prototypes, banks, candidates and label maps of this vocabulary and these images are
    each compared on the settings known without a model; every one of them is also checked to be
    an ovdiff file of its kind. Must run inside ``provenance.within_run()`` so the fix named
    is one that `run` has.
    """
    s = settings.sample
    sample_known = {"source": "sd", "negative_prompt": s.negative_prompt, "seed": s.seed,
                    "reseed_per_class": s.reseed_per_class, "steps": s.steps, "guidance": s.guidance,
                    "scheduler": s.scheduler, "num_images": s.num_images, "batch_size": s.batch_size,
                    "safety_checker": False, "models": {"preset": preset}}
    attribute_known = {"source": "recorded", "settings": AttributeSettings().to_meta(), "models": {"preset": preset}}
    mask_settings = settings.mask.to_meta()
    mask_known: dict[str, Any] = {"settings": {k: v for k, v in mask_settings.items() if k != "proposer"}}
    if settings.proposer == "threshold":  # auto's choice depends on whether CutLER's checkpoint is there
        mask_known = {"proposer": "threshold", "settings": {**mask_settings, "proposer": "threshold"}}
    prototype_known = settings.prototype.to_meta()
    if prototype_known["kmeans"] == "auto":  # decided by the device, which `run` resolves before this
        del prototype_known["kmeans"]
    extractors = tuple(dict.fromkeys(settings.extractors))
    for c in vocab.classes:
        folder = work / "support" / c.slug
        known = {**sample_known, "class": c.name, "phrase": c.prompt}
        for image in _numbered_pngs(folder / "images"):
            _check(image, IMAGE_SCHEMA, "sample", known, shown=folder)
        partials = folder / ".crossattn-partial"
        for part in sorted(partials.glob("batch-*.safetensors")) if partials.is_dir() else []:
            _check(part, CROSSATTN_PART.id, "sample", known, record="params", shown=folder)
        _check(folder / "crossattn.safetensors", CROSSATTN.id, "sample", known, shown=folder)
        _check(folder / "attribution.safetensors", ATTRIBUTION.id, "attribute", attribute_known)
        for m in _numbered_pngs(folder / "masks"):
            _check(m, MASK_SCHEMA, "mask", mask_known)
        for ex in extractors:
            _check(work / "prototypes" / f"{c.slug}.{ex}.safetensors", PROTOTYPES.id, "prototype",
                   {"class": c.name, "settings": prototype_known, "models": {"preset": preset}},
                   assumed={"settings": PROTOTYPE_SETTINGS_BEFORE})
    here = vocabulary_folder(work, vocab)
    stuff = sorted(c.name for c in vocab.classes if c.is_stuff)
    for ex in extractors:
        _check(here / "banks" / f"bank.{ex}.safetensors", BANK.id, "filter-stuff",
               {"vocabulary": vocab.to_meta(), "stuff": stuff, "settings": settings.bank.to_meta()})
    if settings.prefilter:
        provenance.check_replaceable(here / "candidates.jsonl", CANDIDATES_SCHEMA, "classify")
    segment_known = {"vocabulary": vocab.to_meta(), "settings": settings.segment.to_meta(),
                     "prefilter": settings.prefilter, "models": {"extractors": KeysOf(frozenset(extractors))}}
    for image in images:
        out = here / "segmentation" / Path(image).stem
        _check(out.with_name(out.name + ".png"), LABELMAP_SCHEMA, "segment", segment_known)
        if settings.overlay:
            _check(out.with_name(out.name + ".overlay.png"), OVERLAY_SCHEMA, "segment", segment_known)

