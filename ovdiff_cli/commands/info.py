"""``ovdiff info``: validate ovdiff files and show what made them."""

from __future__ import annotations

import json

import click

from ovdiff_cli import options


@click.command("info", short_help="Check files ovdiff wrote and show what made them.",
               epilog="Example: ovdiff info protos/cat.dino.safetensors support/cat")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@options.verbosity
def info(paths: tuple[str, ...]) -> None:
    """Check each PATH (a file or support-set folder ovdiff wrote; `-` reads paths from stdin, one
    per line) and print one JSON object per line: its schema, tensor shapes and the metadata
    (class, models, parameters, input hashes).

    A support-set folder is checked file by file. Exits with 1 at the first file that is
    missing, truncated or of a foreign schema.
    """
    from ovdiff_cli.stages.info import describe_all

    expanded = options.expand_stdin(paths)
    for record in describe_all(expanded):
        click.echo(json.dumps(record, ensure_ascii=False))
