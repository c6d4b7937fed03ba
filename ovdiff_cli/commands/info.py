"""``ovdiff info``: validate ovdiff files and show what made them."""

from __future__ import annotations

import json

import click

from ovdiff_cli import options


@click.command("info", epilog="Example: ovdiff info protos/cat.dino.safetensors support/cat")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@options.verbosity
def info(paths: tuple[str, ...]) -> None:
    """Check each PATH (a file or support-set folder ovdiff wrote) and print one JSON object per line:
    its schema, tensor shapes and the metadata (class, models, parameters, input hashes).

    Exits with 1 at the first file that is missing, truncated or of a foreign schema.
    """
    from ovdiff_cli.formats.inspect import describe

    for path in paths:
        click.echo(json.dumps(describe(path), ensure_ascii=False))
