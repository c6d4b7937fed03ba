"""``ovdiff info``: validate ovdiff files and show what made them."""

from __future__ import annotations

import json
import sys

import click

from ovdiff_cli import options


def _stdout_is_terminal() -> bool:
    """Whether a person reads stdout (a terminal), rather than a pipe or a file."""
    return sys.stdout.isatty()


@click.command("info", short_help="Check files ovdiff wrote and show what made them.",
               epilog="Example: ovdiff info protos/cat.dino.safetensors support/cat")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--check-values", is_flag=True,
              help="Also load every tensor and check its values (finite, in range) as the stage that reads the "
                   "file does; this imports torch, a few seconds.")
@options.verbosity
def info(paths: tuple[str, ...], check_values: bool) -> None:
    """Check each PATH (a file or support-set folder ovdiff wrote; `-` reads paths from stdin, one
    per line) and print one JSON object per file: its schema, tensor shapes and the metadata
    (class, models, parameters, input hashes). Objects are indented in a terminal and one per line
    when stdout is a pipe or a file.

    A tensor file is checked from its header: its schema, metadata, every tensor's dtype and
    shape, and that no byte is missing. A support-set folder is checked file by file. Exits with 1
    at the first file that is missing, truncated or of a foreign schema.
    """
    from ovdiff_cli.stages.info import describe_all

    # Indented for a person; one line per object for a pipe, so `jq`, `grep` and `wc -l` work.
    indent = 2 if _stdout_is_terminal() else None
    expanded = options.expand_stdin(paths)
    for record in describe_all(expanded, check_values):
        click.echo(json.dumps(record, ensure_ascii=False, indent=indent))
