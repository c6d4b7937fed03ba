"""``ovdiff explain``: the support regions behind a segmentation's pixels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovdiff_cli import options


def _point(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        x, y = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not X,Y (two integers)") from None
    return x, y


@click.command("explain", short_help="The support regions behind a segmentation's pixels.",
               epilog="Example: ovdiff explain segmentation/photo.png --bank banks --class cat")
@click.argument("segmentation", type=click.Path(path_type=Path))
@options.banks("The banks segment used.")
@click.option("--support", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Support-set folders [default: those recorded in the prototype files].")
@click.option("--prototypes", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the prototype files [default: where the bank recorded them].")
@click.option("--class", "class_name", help="Explain the pixels labelled with this class.")
@click.option("--at", callback=_point, metavar="X,Y", help="Explain one pixel (in the original image).")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Prototypes shown per query and extractor.")
@options.output("Picture to write [default: <stem>.explain.png beside the segmentation].", dir_okay=False,
                path_type=Path)
@options.json_output
@options.verbosity
def explain(segmentation: Path, banks: tuple[str, ...], support: tuple[Path, ...], prototypes: Path | None,
            class_name: str | None, at: tuple[int, int] | None, top: int, output: Path | None, as_json: bool) -> None:
    """Show the support images and regions behind the prototypes that decided SEGMENTATION's pixels
    (a label map written by `ovdiff segment --explain`, or its .explain.safetensors): for one
    pixel (--at), one class (--class), or every class present.

    Writes a picture (one row per prototype: its class, kind and share, then its support images
    with the region tinted) and prints its path; --json prints the records instead. An earlier
    explain picture at that path is replaced; any other file there is left alone (an error).
    """
    from ovdiff_cli.stages.explain import check_picture, picture_path, write_picture
    from ovdiff_cli.stages.explain import explain as run

    if at is not None and class_name is not None:
        raise click.UsageError("give --at or --class, not both")
    out = output or picture_path(segmentation)
    if not as_json:
        check_picture(out)  # before the work: a file ovdiff did not write there is never replaced
    records = run(segmentation, [Path(b) for b in banks], support=support, prototypes_dir=prototypes, at=at,
                  class_name=class_name, top=top)
    if as_json:
        for r in records:
            click.echo(json.dumps(r.to_json()))
        return
    meta = {"segmentation": str(segmentation), "at": list(at) if at else None, "class": class_name, "top": top}
    click.echo(str(write_picture(out, records, meta)))
