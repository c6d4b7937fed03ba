"""``ovdiff segment``: label maps of test images by nearest prototype."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options


@click.command("segment", short_help="Label maps of images by nearest prototype.",
               epilog="Example: ovdiff segment photos/*.jpg --bank banks --overlay -o segmentation")
@click.argument("images", nargs=-1, required=True)
@options.banks("Banks from `ovdiff filter-stuff`: a folder of bank.<extractor>.safetensors or files; repeat "
               "for several. Every extractor with a bank is used.")
@click.option("--candidates", type=click.Path(dir_okay=False, path_type=Path),
              help="Active classes per image from `ovdiff classify` [default: classify in-process].")
@options.no_prefilter
@options.output("Folder for the label maps (<stem>.png) and side files.", default="segmentation", file_okay=False)
@options.pamr("Refine the scores with PAMR (10 iterations, dilations 1,2,4,8,12,24).")
@options.overlay("Also write <stem>.overlay.png: class regions outlined over the image, with a legend of every "
                 "class.")
@click.option("--save-scores", is_flag=True, help="Also write <stem>.scores.safetensors: per-class score maps.")
@click.option("--explain", is_flag=True, help="Also write <stem>.explain.safetensors: per pixel and extractor, the "
                                              "prototype that decided it (for `ovdiff explain`).")
@click.option("--short-side", type=click.IntRange(8, options.MAX_SHORT_SIDE), default=448, show_default=True,
              help="Images are resized to this short side first.")
@click.option("--no-sliding-window", is_flag=True, help="Only the whole image as one window.")
@click.option("--crops", default="448,336", show_default=True, metavar="C,…",
              help="Window sizes of the sliding windows, each with --stride.")
@click.option("--stride", type=click.IntRange(min=1), default=224, show_default=True, help="Sliding-window stride.")
@click.option("--score-floor", type=options.finite(), default=0.0, show_default=True,
              help="Scores at or below this become 0 before the argmax (so such pixels go to background).")
@options.no_background("The no-background protocol: argmax over the classes alone.")
@click.option("--bg-threshold", type=options.finite(-1, 1), default=0.75, show_default=True,
              help="With banks made by --bg-mode zero: class scores at or below this become 0.")
@click.option("--keep-inactive-bg", is_flag=True, help="Background prototypes of classes the pre-filter rejected "
                                                       "stay in the background class.")
@options.dataset("IMAGE is this dataset's root: segment its validation split (context59: without background).")
@click.option("--images-per-batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Images whose windows share network batches.")
@options.model_run(8)
@options.shard
def segment(images: tuple[str, ...], banks: tuple[str, ...], candidates: Path | None, no_prefilter: bool, output: str,
            pamr: bool, overlay: bool, save_scores: bool, explain: bool, short_side: int, no_sliding_window: bool,
            crops: str, stride: int,
            score_floor: float, no_background: bool, bg_threshold: float, keep_inactive_bg: bool,
            dataset: str | None, images_per_batch: int, models: str, device: str, dtype: str, batch_size: int,
            overwrite: bool,
            shard: options.Shard) -> None:
    """Label every pixel of each IMAGE (`-` reads paths from stdin) with the class of its most
    similar prototype: windows of 448 and 336 at stride 224 plus the whole image, cosine
    similarity to every bank row, the mean over extractors and windows, background where no class
    scores above 0 or the background prototypes win.

    Writes OUTPUT/<stem>.png (palette: 0 background, i the i-th class of the vocabulary) and prints
    each. A rerun reuses a label map made from the same image content, banks and settings, and
    remakes one whose image changed; other settings are an error (see --overwrite).
    """
    log.loading_models()
    from ovdiff_cli.core.settings import SegmentSettings
    from ovdiff_cli.stages.segment import SideOutputs
    from ovdiff_cli.stages.segment import segment as run

    expected = None
    paths = [Path(p) for p in options.expand_stdin(images)]
    if dataset is not None:
        from ovdiff_cli.formats.datasets import open_dataset
        from ovdiff_cli.formats.vocabulary import builtin

        if len(paths) != 1:
            raise click.UsageError("with --dataset, give the dataset's root as the one IMAGE argument")
        ds = open_dataset(dataset, paths[0])
        paths = [image for _, image, _ in ds.items]
        expected = builtin(ds.vocabulary).names
        no_background = no_background or not ds.background
    try:
        sizes = tuple(int(c) for c in crops.split(",") if c.strip())
    except ValueError:
        raise click.BadParameter(f"{crops!r} is not a comma list of window sizes", param_hint="--crops") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("give window sizes of at least 1 pixel", param_hint="--crops")
    settings = SegmentSettings(short_side=short_side, crops=tuple((c, stride) for c in sizes),
                               sliding_window=not no_sliding_window, score_floor=score_floor,
                               background=not no_background, bg_threshold=bg_threshold, pamr=pamr,
                               keep_inactive_bg=keep_inactive_bg)
    dev = options.resolve_device(device)
    net_dtype, vit_dtype = options.resolve_dtypes(dtype, dev)
    sides = SideOutputs(overlay=overlay, scores=save_scores, explain=explain)
    for path in run(paths, [Path(b) for b in banks], out=Path(output), preset=models, device=dev, dtype=net_dtype,
                    vit_dtype=vit_dtype, settings=settings, candidates=candidates, prefilter=not no_prefilter,
                    batch_size=batch_size, images_per_batch=images_per_batch, shard=shard, overwrite=overwrite,
                    sides=sides, expected_classes=expected):
        click.echo(str(path))
