"""``ovdiff info``: validate ovdiff files and show what made them."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ovdiff_cli import options


def _stdout_is_terminal() -> bool:
    """Whether a person reads stdout (a terminal), rather than a pipe or a file."""
    return sys.stdout.isatty()


def _for_people(value: Any, depth: int = 0) -> str:
    """``value`` as indented JSON, with lists of plain values (shapes, class names) on one line."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_for_people(v, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(f"{inner}{_for_people(v, depth + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


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
    terminal = _stdout_is_terminal()
    expanded = options.expand_stdin(paths)
    for record in describe_all(expanded, check_values):
        click.echo(_for_people(record) if terminal else json.dumps(record, ensure_ascii=False))
