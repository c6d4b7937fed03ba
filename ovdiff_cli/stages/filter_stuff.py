"""filter-stuff: one bank per extractor from a vocabulary's prototype files (docs/method.md §5).

Files are matched to classes by the class named in their metadata, never by file name, and to
banks by their extractor. Within a bank every file must come from the same extractor settings
and models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovdiff_cli import log
from ovdiff_cli.core.bank import Rows, class_rows, normalised, stuff_filter
from ovdiff_cli.core.prototypes import Prototypes
from ovdiff_cli.core.settings import BankSettings
from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats.atomic import file_sha256
from ovdiff_cli.formats import provenance
from ovdiff_cli.formats.lock import locked
from ovdiff_cli.formats.prototypes import BANK, Bank, bank_path, read_prototypes, write_bank
from ovdiff_cli.formats.vocabulary import Vocabulary, build
from ovdiff_cli.stages.support import check_writable

#: What must agree between the prototype files of one bank.
SAME = ("features", "models")
REUSED = log.Repeated(lambda paths: log.counted(
    paths, "{item}: exists, made the same way from the same prototype files; reused",
    "{n} banks exist, made the same way from the same prototype files; reused (first: {first})"))


def with_stuff(vocab: Vocabulary, stuff: Sequence[str]) -> Vocabulary:
    """The vocabulary with the named classes marked stuff (``--stuff``)."""
    unknown = [n for n in stuff if n not in vocab.names]
    if unknown:
        raise BadInput(f"--stuff {unknown[0]!r} is not a class of the vocabulary", f"its classes: {', '.join(vocab.names)}")
    entries = [(c.name, c.prompt, "stuff" if c.name in stuff else c.kind) for c in vocab.classes]
    return build(vocab.name, entries, overlay=False)


def group(files: Sequence[Path], vocab: Vocabulary) -> dict[str, dict[str, tuple[Path, Prototypes]]]:
    """extractor → class → (file, prototypes); every class of the vocabulary present once per extractor."""
    by_ex: dict[str, dict[str, tuple[Path, Prototypes]]] = {}
    ignored = []
    for f in files:
        p = read_prototypes(f)
        if p.class_name not in vocab.names:
            ignored.append(p.class_name)
            continue
        seen = by_ex.setdefault(p.extractor, {})
        if p.class_name in seen:
            raise BadFile(f, f"holds {p.extractor} prototypes of {p.class_name!r}, as {seen[p.class_name][0]} does",
                          fix="give one file per class and extractor")
        seen[p.class_name] = (f, p)
    outside = ", ".join(sorted(set(ignored))[:3]) + (", …" if len(set(ignored)) > 3 else "")
    if not by_ex:
        raise BadInput(f"none of the files holds prototypes of a class of the vocabulary {vocab.name}"
                       + (f" (they hold {outside})" if ignored else ""),
                       "make them with `ovdiff prototype`, or check --vocab")
    for ex, classes in by_ex.items():
        missing = [n for n in vocab.names if n not in classes]
        if missing:
            raise BadInput(f"no {ex} prototypes of class {missing[0]!r} among the files"
                           + (f" ({len(missing)} classes missing)" if len(missing) > 1 else ""),
                           f"run `ovdiff prototype -x {ex}` on its support set and pass the file too")
        first_path, first = classes[vocab.names[0]]
        for name in vocab.names[1:]:
            path, p = classes[name]
            differ = [k for k in SAME if p.meta.get(k) != first.meta.get(k)]
            if p.dim != first.dim:
                differ.append("dimension")
            if differ:
                raise BadFile(path, f"was made with other {' and '.join(differ)} than {first_path}",
                              fix="recompute the odd prototypes with the same `ovdiff prototype` settings")
    if ignored:  # said only once the files are known to make banks, so an error stays one line
        log.logger.info("ignored prototypes of classes outside the vocabulary: %s", outside)
    return by_ex


def build_bank(vocab: Vocabulary, classes: dict[str, tuple[Path, Prototypes]], settings: BankSettings) -> tuple[Bank, dict[str, Any]]:
    """The bank of one extractor and a summary of counts."""
    dim = classes[vocab.names[0]][1].dim
    bg_kinds = {"all": settings.proto_types, "mean": ("class",), "zero": ()}[settings.bg_mode]
    fg_parts, bg_parts = [], []
    for label, c in enumerate(vocab.classes, 1):
        p = classes[c.name][1]
        fg_parts.append(class_rows(label, {"class": p.fg.class_proto, "instance": p.fg.instance, "part": p.fg.part},
                                   settings.proto_types))
        bg_parts.append(class_rows(label, {"class": p.bg.class_proto, "instance": p.bg.instance, "part": p.bg.part},
                                   bg_kinds))
    fg, bg = Rows.cat(fg_parts, dim), Rows.cat(bg_parts, dim)
    stuff = {label for label, c in enumerate(vocab.classes, 1) if c.is_stuff}
    filtered = stuff_filter(fg, bg, stuff, settings)
    for d in filtered.dropped:
        d["class"] = vocab.names[d["owner"] - 1]
        if "against" in d:
            d["against"]["class"] = vocab.names[d["against"]["owner"] - 1]
    fg_n, bg_n = normalised(fg), normalised(filtered.bg)
    first = classes[vocab.names[0]][1]
    counts = {name: {"fg": int((fg.owner == label).sum()), "bg": int((filtered.bg.owner == label).sum()),
                     "bg_dropped": sum(1 for d in filtered.dropped if d["owner"] == label)}
              for label, name in enumerate(vocab.names, 1)}
    digests, wanted = bank_identity(vocab, classes, settings)
    # "sources" is where explain reads the prototype files back: read paths, never written
    meta = {**provenance.identity(digests, wanted), "extractor": first.extractor, "models": first.meta.get("models"),
            "features": first.meta.get("features"), "sources": {n: str(classes[n][0]) for n in vocab.names},
            "dropped": filtered.dropped, "counts": counts}
    del meta["vocabulary"]  # write_bank stores the vocabulary itself
    bank = Bank(fg_n, bg_n, vocab, meta)
    summary = {"extractor": first.extractor, "fg": len(fg_n), "bg": len(bg_n), "bg_dropped": len(filtered.dropped),
               "classes": counts}
    return bank, summary


def bank_identity(vocab: Vocabulary, classes: dict[str, tuple[Path, Prototypes]],
                  settings: BankSettings) -> tuple[dict[str, str], dict[str, Any]]:
    """(inputs, settings) of a bank, as provenance compares them.

    Inputs are the content digests of the prototype files keyed by class, so moving or renaming
    a file changes nothing while remaking it does.
    """
    digests = {name: file_sha256(classes[name][0]) for name in vocab.names}
    stuff = sorted(c.name for c in vocab.classes if c.is_stuff)
    return digests, {"vocabulary": vocab.to_meta(), "stuff": stuff, "settings": settings.to_meta()}


@log.stage()
def filter_stuff(files: Sequence[Path], vocab: Vocabulary, *, out: Path, settings: BankSettings = BankSettings(),
                 stuff: Sequence[str] = (), overwrite: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """Write ``out/bank.<extractor>.safetensors`` per extractor; return (path, summary) pairs."""
    vocab = with_stuff(vocab, stuff) if stuff else vocab
    if settings.compare not in ("stuff", "all") or settings.bg_mode not in ("all", "mean", "zero"):
        raise BadInput(f"unknown setting in {settings}", "see `ovdiff filter-stuff --help`")
    by_ex = group(files, vocab)  # every file read and checked (names included) before anything is written
    check_writable(out)
    results = []
    for ex in sorted(by_ex):
        path = bank_path(out, ex)
        digests, wanted = bank_identity(vocab, by_ex[ex], settings)
        with locked(path):  # a second process waits here, then reuses what the first wrote
            reuse = provenance.decide(path, BANK.id, stage="filter-stuff", inputs=digests, settings=wanted,
                                      overwrite=overwrite)
            bank, summary = build_bank(vocab, by_ex[ex], settings)
            if reuse:
                log.repeat(REUSED, path)
            else:
                write_bank(path, bank)
        summary["path"] = str(path)
        results.append((path, summary))
    return results
