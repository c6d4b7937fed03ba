"""``ovdiff sample``: support sets from Stable Diffusion, with recorded cross-attention."""

from __future__ import annotations

from pathlib import Path

import click

from ovdiff_cli import options
from ovdiff_cli.core.settings import NEGATIVE_PROMPT, TEMPLATE, SampleSettings


@click.command("sample", short_help="Support sets from Stable Diffusion, recording cross-attention.",
               epilog='Example: ovdiff sample "donut with chocolate glaze" cat -n 8 -o support')
@click.argument("words", nargs=-1)
@options.vocab
@options.output("Folder for the support sets (one subfolder per class).", default="support", file_okay=False)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=32, show_default=True,
              help="Support images per class (paper v1: 64).")
@options.batch_size(8)
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True, help="DPM-Solver++ steps.")
@click.option("--guidance", type=float, default=8.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--template", default=TEMPLATE, show_default=True,
              help="Prompt template; {} is replaced by the class prompt (paper v1: 'A good photo of a {}').")
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
@options.models
@options.device
@options.dtype
@options.overwrite
@options.shard
@options.verbosity
def sample(words: tuple[str, ...], vocab: str | None, output: str, num_images: int, batch_size: int, steps: int,
           guidance: float, template: str, negative_prompt: str, free_prompt: str | None, seed: int,
           no_reseed_per_class: bool, no_prompt_overlay: bool, safety_checker: bool, models: str,
           device: str, dtype: str, overwrite: bool, shard: options.Shard) -> None:
    """Draw a support set for each WORD (or each class of --vocab) and record, in the same pass, the
    cross-attention of every layer, head and step to the prompt's tokens.

    Writes OUTPUT/<class>/images/00000.png… and OUTPUT/<class>/crossattn.safetensors and prints each
    folder. A rerun resumes unfinished sets and skips finished ones; other settings over an existing
    set are an error unless --overwrite.
    """
    from ovdiff_cli.errors import BadInput
    from ovdiff_cli.formats import vocabulary
    from ovdiff_cli.stages.sample import sample as run

    if not words and not vocab:
        raise click.UsageError("give WORDs or --vocab")
    overlay = not no_prompt_overlay
    if any(not w.strip() for w in words):
        raise BadInput("a WORD is empty", "give each class a name")
    entries = list(vocabulary.parse(vocab, overlay).classes) if vocab else []
    entries += list(vocabulary.from_words(list(words), overlay).classes) if words else []
    classes = vocabulary.build("sample", [(c.name, c.prompt, c.kind) for c in entries], overlay=False).classes
    dev = options.resolve_device(device)
    settings = SampleSettings(num_images=num_images, batch_size=batch_size, steps=steps, guidance=guidance,
                              template=template, negative_prompt=negative_prompt, seed=seed,
                              reseed_per_class=not no_reseed_per_class)
    for folder in run(classes, Path(output), models, dev, options.resolve_dtype(dtype, dev), settings, shard,
                      overwrite, safety_checker, free_prompt):
        click.echo(str(folder))
