"""``ovdiff filter-stuff``: one bank per extractor for a vocabulary, with the stuff filter."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovdiff_cli import options


def _names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


@click.command("filter-stuff", short_help="A vocabulary's banks of prototypes, with the stuff filter.",
               epilog="Example: ovdiff filter-stuff prototypes/*.safetensors --vocab voc -o banks")
@click.argument("files", nargs=-1, required=True)
@options.vocab
@options.output("Folder for the banks (bank.<extractor>.safetensors).", default="banks", file_okay=False)
@click.option("--threshold", type=options.finite(-1, 1), default=0.85, show_default=True,
              help="A thing's background prototype whose cosine with a stuff class's foreground prototype "
                   "exceeds this is dropped.")
@click.option("--stuff", callback=_names, metavar="NAME,…", help="Also treat these classes as stuff.")
@click.option("--no-stuff-filter", is_flag=True, help="Keep every background prototype (stuff classes' too).")
@click.option("--stuff-compare", type=click.Choice(["stuff", "all"]), default="stuff", show_default=True,
              help="all: every class keeps background prototypes, each compared with the foreground "
                   "prototypes of all other classes (an official variant).")
@click.option("--proto-types", default="class,instance,part", show_default=True, metavar="KIND,…",
              help="Prototype kinds in the bank: any of class, instance, part.")
@click.option("--bg-mode", type=click.Choice(["all", "mean", "zero"]), default="all", show_default=True,
              help="Background prototypes: all kinds chosen, the class mean only, or none (segment then "
                   "thresholds the class scores).")
@options.json_output
@options.overwrite
@options.verbosity
def filter_stuff(files: tuple[str, ...], vocab: str | None, output: str, threshold: float, stuff: tuple[str, ...],
                 no_stuff_filter: bool, stuff_compare: str, proto_types: str, bg_mode: str, as_json: bool,
                 overwrite: bool) -> None:
    """Gather the prototype FILEs of one vocabulary (`-` reads paths from stdin) into
    OUTPUT/bank.<extractor>.safetensors, rows L2-normalised.

    Stuff classes keep no background prototypes, and a thing's background prototype too close to
    a stuff class's foreground is dropped; the bank records each drop and why. Files are matched
    to classes by the class in their metadata. Prints each bank (or, with --json, its counts).
    A rerun reuses a bank made from the same files' contents and settings and remakes it when a
    file changed; another vocabulary or setting is an error unless --overwrite.
    """
    from ovdiff_cli.core.settings import BankSettings
    from ovdiff_cli.errors import BadInput
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.filter_stuff import filter_stuff as run

    if not vocab:
        raise click.UsageError("give --vocab")
    kinds = tuple(k.strip() for k in proto_types.split(",") if k.strip())
    if not kinds or any(k not in ("class", "instance", "part") for k in kinds):
        raise BadInput(f"--proto-types {proto_types!r} is not a list of prototype kinds",
                       "use a comma list of class, instance, part")
    settings = BankSettings(threshold=threshold, stuff_filter=not no_stuff_filter, compare=stuff_compare,
                            proto_types=kinds, bg_mode=bg_mode)
    paths = [Path(p) for p in options.expand_stdin(files)]
    for path, summary in run(paths, vocabulary.parse(vocab), out=Path(output), settings=settings, stuff=stuff,
                             overwrite=overwrite):
        click.echo(json.dumps(summary) if as_json else str(path))
