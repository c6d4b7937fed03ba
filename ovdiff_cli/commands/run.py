"""``ovdiff run``: every stage for a vocabulary and a set of images."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options
from ovdiff_cli.core.settings import KMEANS_CHOICES


@click.command("run", short_help="Every stage for a vocabulary and a set of images.",
               epilog='Example: ovdiff run --vocab "cat,donut with chocolate glaze" photo.jpg -o work')
@click.argument("images", nargs=-1, required=True)
@options.vocab
@options.output("Work folder: support sets, prototypes, banks and label maps, reused by later runs.",
                default="ovdiff-work", file_okay=False)
@options.num_images("Support images per class.")
@options.steps("Sampling steps.")
@options.seed(42)
@options.extractors("Feature extractor")
@options.proposer("Mask proposals (see `ovdiff mask`).")
@click.option("--kmeans", type=click.Choice(KMEANS_CHOICES), default="auto", show_default=True,
              help="k-means of the prototype parts (see `ovdiff prototype`): auto is torch on a GPU, "
                   "scikit-learn on the CPU; sklearn reuses a GPU work folder made before --kmeans existed.")
@options.no_prefilter
@options.pamr("Refine the scores with PAMR.")
@options.overlay("Also write a colour overlay per image.")
@options.models
@options.device
@options.dtype
@options.batch_size(8)
@options.verbosity
def run(images: tuple[str, ...], vocab: str | None, output: str, num_images: int, steps: int, seed: int,
        extractors: tuple[str, ...], proposer: str, kmeans: str, no_prefilter: bool, pamr: bool, overlay: bool,
        models: str, device: str, dtype: str, batch_size: int) -> None:
    """Segment each IMAGE (`-` reads paths from stdin) with the classes of --vocab: sample,
    attribute, mask, prototype, filter-stuff, classify and segment in one go, in the work folder
    OUTPUT. Whatever an earlier run left there with the same settings is reused, so adding a class
    computes only that class. Prints the label maps. Other settings over an earlier run's files are
    an error, found before anything is drawn: use another OUTPUT, or redo the one stage with its own
    command and --overwrite.
    """
    from ovdiff_cli.core.settings import DEFAULT_EXTRACTORS, PrototypeSettings, SampleSettings, SegmentSettings
    from ovdiff_cli.formats import provenance, vocabulary
    from ovdiff_cli.formats.images import open_image
    from ovdiff_cli.stages.run_plan import RunSettings, check_ahead

    if not vocab:
        raise click.UsageError("give --vocab")
    settings = RunSettings(sample=SampleSettings(num_images=num_images, steps=steps, seed=seed,
                                                 batch_size=batch_size),
                           proposer=proposer, extractors=extractors or DEFAULT_EXTRACTORS,
                           prototype=PrototypeSettings(kmeans=kmeans),
                           segment=SegmentSettings(pamr=pamr), prefilter=not no_prefilter, batch_size=batch_size,
                           overlay=overlay)
    paths = [Path(p) for p in options.expand_stdin(images)]
    vocab_ = vocabulary.parse(vocab)
    # Before torch is imported (seconds) and anything drawn (minutes): the images, and every file an
    # earlier run left in OUTPUT that a stage would refuse. run_all checks both again, for the API.
    for path in paths:
        open_image(path).close()
    with provenance.within_run():
        check_ahead(vocab_, paths, work=Path(output), preset=models, settings=settings)

    log.loading_models()  # only now: a usage error or a conflict above is one line, said at once
    from ovdiff_cli.stages.run import run as run_all

    dev = options.resolve_device(device)
    net_dtype, vit_dtype = options.resolve_dtypes(dtype, dev)
    for path in run_all(vocab_, paths, work=Path(output), preset=models, device=dev, dtype=net_dtype,
                        vit_dtype=vit_dtype, settings=settings):
        click.echo(str(path))
