"""``ovdiff mask``: foreground and background masks of support images."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options


@click.command("mask", short_help="Foreground and background masks of support images.",
               epilog="Example: ovdiff sample cat | ovdiff attribute - | ovdiff mask - --overlay")
@click.argument("folders", nargs=-1, required=True)
@options.proposer("Where instance proposals come from: CutLER (its checkpoint from `ovdiff models download "
                  "paper`), `threshold` (multi-Otsu on the attribution maps, the paper's 'w/o CutLER'), a "
                  "proposer registered as proposer.NAME, or auto: CutLER when it can be loaded, else threshold.")
@click.option("--score-threshold", type=options.finite(0, 1), default=0.35, show_default=True,
              help="CutLER detections kept above this score.")
@click.option("--fallback-fg", type=options.finite(0, 1), default=0.5, show_default=True,
              help="Without usable proposals: foreground where attribution > this.")
@click.option("--fallback-bg", type=options.finite(0, 1), default=0.2, show_default=True,
              help="Without usable proposals: background where attribution < this.")
@click.option("--bg-attn-max", type=options.finite(0, 1), default=0.2, show_default=True,
              help="The background proposal keeps only pixels with attribution below this (then one erosion).")
@options.overlay("Also write FOLDER/overlays/00000.png…: fg (crimson) and bg (blue) over each image, for a person "
                 "to check.")
@click.option("--save-proposals", is_flag=True, help="Keep the raw proposals in FOLDER/proposals.safetensors.")
@options.model_run(8)
def mask(folders: tuple[str, ...], proposer: str, score_threshold: float, fallback_fg: float, fallback_bg: float,
         bg_attn_max: float, overlay: bool, save_proposals: bool, models: str, device: str, dtype: str,
         batch_size: int, overwrite: bool) -> None:
    """Write FOLDER/masks/00000.png… for each support-set FOLDER (`-` reads folders from stdin; a
    FOLDER/attribution.safetensors path, as `ovdiff attribute` prints, stands for its folder):
    palette PNGs with 0 = neither, 1 = foreground, 2 = background, from class-agnostic proposals
    ranked by mean attribution (or the attribution thresholds). Needs `ovdiff attribute` first.

    CutLER runs on each --batch-size batch of images at once; --dtype auto keeps it in float32,
    as the paper ran it. Prints each folder. A rerun skips masks made the same way; other
    settings are an error unless --overwrite.
    """
    if fallback_bg > fallback_fg:
        raise click.BadParameter("--fallback-bg must not exceed --fallback-fg", param_hint="--fallback-bg")
    log.loading_models()
    from ovdiff_cli.core.settings import MaskSettings
    from ovdiff_cli.stages.mask import mask as run

    paths = [Path(p) for p in options.expand_stdin(folders)]
    paths = [p.parent if p.name == "attribution.safetensors" and p.is_file() else p for p in paths]
    settings = MaskSettings(score_threshold=score_threshold, fallback_fg=fallback_fg, fallback_bg=fallback_bg,
                            bg_attn_max=bg_attn_max)
    dev = options.resolve_device(device)
    # the release runs CutLER in float32: `--dtype auto` keeps it there, as it keeps the ViTs
    net_dtype = options.resolve_dtypes(dtype, dev)[1]
    for folder in run(paths, proposer=proposer, preset=models, device=dev, dtype=net_dtype, settings=settings,
                      batch_size=batch_size, overwrite=overwrite, overlay=overlay, save_proposals=save_proposals):
        click.echo(str(folder))
