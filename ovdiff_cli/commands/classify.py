"""``ovdiff classify``: CLIP's category pre-filter, one JSON object per image."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options


@click.command("classify", short_help="CLIP pre-filter: the classes each image may contain.",
               epilog="Example: ovdiff classify photos/*.jpg --vocab voc -o candidates.jsonl")
@click.argument("images", nargs=-1, required=True)
@options.vocab
@options.output("JSON Lines file to write; `-` prints the records on stdout instead.", default="candidates.jsonl",
                value_type=click.STRING)
@click.option("--clip-topk", type=click.IntRange(1, 16), default=10, show_default=True,
              help="Most classes kept for the subset search (2^k − 1 prompts per image).")
@options.model_run(32)
def classify(images: tuple[str, ...], vocab: str | None, output: str, clip_topk: int, models: str, device: str,
             dtype: str, batch_size: int, overwrite: bool) -> None:
    """Decide for each IMAGE (`-` reads paths from stdin) which classes of the vocabulary it may
    contain, with CLIP as the method does: softmax of the cosines with "a {class}", the classes
    with p ≥ 1/|C| (at most --clip-topk), then the best "a X and a Y …" prompt over every subset
    of them. Stuff classes are always active.

    Writes one JSON object per image (scores, kept, subset, subset_score, active) and prints the
    file. Images already in OUTPUT, with the same content, vocabulary and settings, are kept, not
    redone; OUTPUT must be a file `ovdiff classify` wrote (never replaced otherwise).
    """
    if not vocab:
        raise click.UsageError("give --vocab")
    log.loading_models()
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.classify import classify as run
    from ovdiff_cli.stages.classify import classify_into

    paths = [Path(p) for p in options.expand_stdin(images)]
    dev = options.resolve_device(device)
    net_dtype = options.resolve_dtype(dtype, dev)
    if output == "-":
        for r in run(paths, vocabulary.parse(vocab), preset=models, device=dev, dtype=net_dtype, batch_size=batch_size,
                     max_keep=clip_topk):
            click.echo(r.to_json())
    else:
        click.echo(str(classify_into(paths, vocabulary.parse(vocab), path=Path(output), preset=models, device=dev,
                                     dtype=net_dtype, batch_size=batch_size, max_keep=clip_topk,
                                     overwrite=overwrite)))
