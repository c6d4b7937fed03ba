"""``ovdiff score``: per-class IoU and mIoU of label maps."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovdiff_cli import options


def _png_name(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() != ".png":
        raise click.BadParameter(f"{str(value)!r}: the plot is a PNG, give a file name ending in .png")
    return value


@click.command("score", short_help="Per-class IoU and mIoU of label maps against ground truths.",
               epilog="Example: ovdiff score segmentation VOCdevkit --dataset voc --plot voc.png")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@options.vocab
@options.dataset("GT is this dataset's root: its validation split, classes and protocol.")
@options.no_background("The no-background protocol: ground-truth background is ignored and the labels shift "
                       "down by one.")
@click.option("--strict", is_flag=True, help="Missing or extra predictions are errors, not warnings.")
@click.option("--nan-as-zero", is_flag=True, help="Also print the official headline variant: undefined IoUs as 0.")
@click.option("--merge", is_flag=True, help="PATHS are `score --json` outputs of shards: add them up.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              callback=_png_name,
              help="Also draw the scores into this PNG: per-class IoU bars, sorted, with the mIoU line, above the "
                   "row-normalised confusion matrix.")
@options.json_output
@options.shard
@options.verbosity
def score(paths: tuple[Path, ...], vocab: str | None, dataset: str | None, no_background: bool, strict: bool,
          nan_as_zero: bool, merge: bool, plot: Path | None, as_json: bool, shard: options.Shard) -> None:
    """Score PRED against GT: label maps matched by file stem (folders, or files listing paths;
    overlays, explain pictures and score plots ovdiff wrote are not predictions), intersections and unions
    summed over the whole set, label 255 ignored; a class absent from both is left out of the mean
    IoU ("–"). --vocab must be the vocabulary the predictions record, in its order.

    Prints a table, or with --json every count and metric (mIoU as a fraction under "mIoU").
    --plot also writes the scores as a picture (1200 px wide, 1200 + 20 px per class high); an
    earlier plot at that path is replaced, any other file there is left alone (an error).
    """
    from rich.console import Console

    from ovdiff_cli.core.score import metrics
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.score import merge as merge_reports
    from ovdiff_cli.stages.score import score as run
    from ovdiff_cli.stages.score import table

    if plot is not None:
        from ovdiff_cli.stages.score_plot import check_plot

        check_plot(plot)  # before any work: a path that cannot take the picture is one line at once
    if merge:
        report = merge_reports(paths)
    else:
        if len(paths) != 2:
            raise click.UsageError("give PRED and GT (or --merge with score --json files)")
        report = run(paths[0], paths[1], vocab=vocabulary.parse(vocab) if vocab else None, dataset=dataset,
                     background=not no_background, strict=strict, shard=shard)
    if plot is not None:
        from ovdiff_cli import log
        from ovdiff_cli.stages.score_plot import write_plot

        write_plot(plot, report)
        log.logger.info("plot written to %s", plot)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    console = Console(highlight=False)
    console.print(table(report))
    if nan_as_zero:
        v = metrics(report.counts)["mIoU_nan_as_zero"]
        console.print(f"mIoU with undefined classes as 0: {100 * v:.1f}")
