"""``ovdiff prototype``: class, instance and part prototypes of support sets, per extractor."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options
from ovdiff_cli.core.settings import KMEANS_CHOICES


@click.command("prototype", short_help="Class, instance and part prototypes per class and extractor.",
               epilog="Example: ovdiff mask support/* | ovdiff prototype - -x sd -x dino -x clip")
@click.argument("folders", nargs=-1, required=True)
@options.extractors("Feature extractor (or one a plugin offers as extractor.NAME)", metavar="sd|dino|clip|mae|NAME")
@options.output("Folder for the prototype files (<class>.<extractor>.safetensors).", default="prototypes",
                file_okay=False)
@click.option("--clusters", type=click.IntRange(min=1), default=32, show_default=True,
              help="K: k-means parts per side.")
@click.option("--kmeans", type=click.Choice(KMEANS_CHOICES), default="auto", show_default=True,
              help="k-means of the parts: torch (on --device) or scikit-learn (on the CPU); auto is torch on a "
                   "GPU and scikit-learn on the CPU. Recorded in each file.")
@click.option("--sd-layers", type=click.Choice(["default", "paper-v1"]), default="default", show_default=True,
              help="SD cross-attention layers whose queries are the features: default = first, mid, Up-1, "
                   "Up-2, last (7680-d); paper-v1 drops the mid block (6400-d).")
@click.option("--sd-timestep", type=click.IntRange(0, 999), default=200, show_default=True,
              help="Noise level of the SD feature pass.")
@click.option("--clip-norm", type=click.Choice(["imagenet", "clip"]), default="imagenet", show_default=True,
              help="Input statistics for CLIP's features: ImageNet's (the official release) or CLIP's own.")
@click.option("--clip-token", is_flag=True, help="CLIP features are the block's output tokens, not its keys "
                                                  "(paper v1 found keys better).")
@click.option("--mae-variant", type=click.Choice(["b16", "l16"]), default="b16", show_default=True,
              help="MAE checkpoint for -x mae: long-sequence ViT-B/16 (official) or ViT-L/16 (paper v1).")
@options.model_run(8)
@options.shard
def prototype(folders: tuple[str, ...], extractors: tuple[str, ...], output: str, clusters: int, kmeans: str,
              sd_layers: str, sd_timestep: int, clip_norm: str, clip_token: bool, mae_variant: str, models: str,
              device: str, dtype: str, batch_size: int, overwrite: bool, shard: options.Shard) -> None:
    """Pool each support-set FOLDER's features over its masks into foreground and background
    prototypes: the class mean, one per image, and K k-means parts (`-` reads folders from stdin).

    Writes OUTPUT/<class>.<extractor>.safetensors for every class and extractor and prints each
    file. Needs `ovdiff mask` first. A rerun reuses files made the same way from the same images
    and masks (at any --batch-size) and remakes those whose images or masks changed; other
    settings or models are an error unless --overwrite.
    """
    log.loading_models()
    from ovdiff_cli.core.settings import DEFAULT_EXTRACTORS, PrototypeSettings
    from ovdiff_cli.models.extractor_build import FeatureOptions
    from ovdiff_cli.stages.prototype import prototype as run

    paths = [Path(p) for p in options.expand_stdin(folders)]
    dev = options.resolve_device(device)
    net_dtype, vit_dtype = options.resolve_dtypes(dtype, dev)
    features = FeatureOptions(sd_layers=sd_layers, sd_timestep=sd_timestep, clip_norm=clip_norm,
                              clip_readout="token" if clip_token else "keys", variant=mae_variant)
    for path in run(paths, extractors=extractors or DEFAULT_EXTRACTORS, out=Path(output), preset=models, device=dev,
                    dtype=net_dtype, vit_dtype=vit_dtype, settings=PrototypeSettings(clusters=clusters, kmeans=kmeans),
                    batch_size=batch_size, overwrite=overwrite, features=features, shard=shard):
        click.echo(str(path))
