"""``ovdiff attribute``: attribution maps of support sets."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options


def _layers(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if value is None:
        return tuple(range(16))
    try:
        layers = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of layer indices like 0,6,15") from None
    if not layers or min(layers) < 0:
        raise click.BadParameter("give layer indices 0..15")
    return layers


@click.command("attribute", short_help="Attribution maps of support sets from their attention.",
               epilog="Example: ovdiff sample cat -o support | ovdiff attribute -")
@click.argument("folders", nargs=-1, required=True)
@click.option("--phrase", help="Attribute these words of the prompt instead of the class phrase. With --renoise: "
                                "the phrase put into the template [default: the images' class, else the "
                                "folder's name].")
@click.option("--attn-layers", callback=_layers, metavar="I,J,…",
              help="Cross-attention layers to average (0..15 in execution order) [default: all 16].")
@click.option("--renoise", is_flag=True, help="Record attention by re-noising the images through the diffusion "
                                               "model (for images without a recording, e.g. your own photos).")
@options.template("Prompt template for --renoise.")
@options.model_run(8)
def attribute(folders: tuple[str, ...], phrase: str | None, attn_layers: tuple[int, ...], renoise: bool,
              template: str, models: str, device: str, dtype: str, batch_size: int, overwrite: bool) -> None:
    """Write FOLDER/attribution.safetensors for each support-set FOLDER (`-` reads folders from stdin):
    one map per image in [0, 1], the class phrase's cross-attention averaged over steps, layers,
    heads and tokens, min–max normalised on the latent grid (64 × 64 for SD at 512²) and again at
    image size.

    Prints each file written. Needs the recorded attention of `ovdiff sample`, or --renoise.
    """
    if renoise:  # redraws with Stable Diffusion; without it, attribution reads the recorded attention only
        log.loading_models()
    from ovdiff_cli.core.settings import AttributeSettings
    from ovdiff_cli.stages.attribute import attribute as run

    paths = [Path(p) for p in options.expand_stdin(folders)]
    dev = options.resolve_device(device)
    for path in run(paths, phrase=phrase, settings=AttributeSettings(layers=attn_layers), overwrite=overwrite,
                    renoise=renoise, preset=models, device=dev, dtype=options.resolve_dtype(dtype, dev),
                    template=template, batch_size=batch_size):
        click.echo(str(path))
