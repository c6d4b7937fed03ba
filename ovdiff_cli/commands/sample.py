"""``ovdiff sample``: support sets from Stable Diffusion, with recorded cross-attention."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import log, options
from ovdiff_cli.core.settings import NEGATIVE_PROMPT, SampleSettings


@click.command("sample", short_help="Support sets from Stable Diffusion, recording cross-attention.",
               epilog='Example: ovdiff sample "donut with chocolate glaze" cat -n 8 -o support')
@click.argument("words", nargs=-1)
@options.vocab
@options.output("Folder for the support sets (one subfolder per class).", default="support", file_okay=False)
@options.num_images("Support images per class (paper v1: 64).")
@options.batch_size(8)
@options.steps("DPM-Solver++ steps.")
@click.option("--guidance", type=options.finite(), default=8.0, show_default=True,
              help="Classifier-free guidance scale.")
@options.template("Prompt template; {} is replaced by the class prompt (paper v1: 'A good photo of a {}').")
@click.option("--negative-prompt", default=NEGATIVE_PROMPT, show_default=True,
              help="Replaces the empty unconditional prompt; '' for none.")
@click.option("--prompt", "free_prompt", help="Free text to draw instead of the template (one class only); "
                                               "all its tokens are attributed.")
@options.seed(42)
@click.option("--no-reseed-per-class", is_flag=True, help="Seed once for the whole run instead of per class "
                                                          "(results then depend on the class order and shard).")
@click.option("--no-prompt-overlay", is_flag=True,
              help="Use class names as prompts as they are, without the method's prompt overlay "
                   "(e.g. keyboard → computer keyboard).")
@click.option("--safety-checker/--no-safety-checker", default=False, show_default=True,
              help="Redraw images SD's safety checker flags (the official pipeline never runs it, so "
                   "it is off by default for fidelity).")
@click.option("--from-images", "from_images", is_flag=True,
              help="Build the support set of one class from your own images instead of drawing it: "
                   "ovdiff sample CLASS --from-images PHOTO... (`-` reads paths from stdin).")
@options.models
@options.device
@options.dtype
@options.overwrite
@options.shard
@options.verbosity
@click.pass_context
def sample(ctx: click.Context, words: tuple[str, ...], vocab: str | None, output: str, num_images: int,
           batch_size: int, steps: int, guidance: float, template: str, negative_prompt: str, free_prompt: str | None,
           seed: int, no_reseed_per_class: bool, no_prompt_overlay: bool, safety_checker: bool, from_images: bool,
           models: str, device: str, dtype: str, overwrite: bool, shard: options.Shard) -> None:
    """Draw a support set for each WORD (or each class of --vocab) and record, in the same pass, the
    cross-attention of every layer, head and step to the prompt's tokens.

    Writes OUTPUT/<class>/images/00000.png… and OUTPUT/<class>/crossattn.safetensors and prints each
    folder. A rerun resumes unfinished sets and skips finished ones; other settings over an existing
    set are an error unless --overwrite. A folder holding images ovdiff did not write is never
    touched.

    With --from-images, the first WORD is the class and the others are image files: they become
    OUTPUT/<class>/images/00000.png… at the generator's size, for `ovdiff attribute --renoise`.
    """
    from ovdiff_cli.errors import BadInput
    from ovdiff_cli.formats import vocabulary

    if not words and not vocab:
        raise click.UsageError("give WORDs or --vocab")
    overlay = not no_prompt_overlay
    if any(not w.strip() for w in (words[:1] if from_images else words)):  # images are paths, not names
        raise BadInput("a WORD is empty", "give each class a name")
    if from_images:
        _from_images(ctx, words, vocab, output, overlay, models, device, dtype, overwrite)
        return
    entries = list(vocabulary.parse(vocab, overlay).classes) if vocab else []
    entries += list(vocabulary.from_words(list(words), overlay).classes) if words else []
    classes = vocabulary.build("sample", [(c.name, c.prompt, c.kind) for c in entries], overlay=False).classes
    log.loading_models()
    from ovdiff_cli.stages.sample import sample as run

    dev = options.resolve_device(device)
    settings = SampleSettings(num_images=num_images, batch_size=batch_size, steps=steps, guidance=guidance,
                              template=template, negative_prompt=negative_prompt, seed=seed,
                              reseed_per_class=not no_reseed_per_class)
    for folder in run(classes, out=Path(output), preset=models, device=dev, dtype=options.resolve_dtype(dtype, dev),
                      settings=settings, shard=shard, overwrite=overwrite, safety_checker=safety_checker,
                      free_prompt=free_prompt):
        click.echo(str(folder))


#: Options that shape drawing only: given with --from-images, they would be silently ignored.
_DRAW_ONLY = ("num_images", "batch_size", "steps", "guidance", "template", "negative_prompt", "free_prompt", "seed",
              "no_reseed_per_class", "safety_checker", "shard")


def _from_images(ctx: click.Context, words: tuple[str, ...], vocab: str | None, output: str, overlay: bool,
                 models: str, device: str, dtype: str, overwrite: bool) -> None:
    """``sample CLASS --from-images PHOTO...``: a support set of the user's own images."""
    from ovdiff_cli.formats import vocabulary

    if vocab:
        raise click.UsageError("--from-images builds one class: give CLASS and images, not --vocab")
    if len(words) < 2:
        raise click.UsageError("--from-images needs CLASS and at least one image: "
                               "ovdiff sample CLASS --from-images PHOTO...")
    given = [p for p in ctx.command.params if p.name in _DRAW_ONLY and
             ctx.get_parameter_source(p.name) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        raise click.UsageError(f"{given[0].opts[-1]} shapes drawn images; it has no effect with --from-images")
    vclass = vocabulary.from_words([words[0]], overlay).classes[0]
    photos = [Path(p) for p in options.expand_stdin(words[1:])]
    log.loading_models()
    from ovdiff_cli.stages.sample import from_images

    dev = options.resolve_device(device)
    click.echo(str(from_images(vclass, photos, out=Path(output), preset=models, device=dev,
                               dtype=options.resolve_dtype(dtype, dev), overwrite=overwrite)))
