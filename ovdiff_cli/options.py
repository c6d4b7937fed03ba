"""Options shared by several commands, each defined once so that a name means one thing everywhere.

Index (docs/design.md §4):

========================  ==================================================================
``-o, --output PATH``     where outputs go (a folder for multi-file outputs): :func:`output`
``--models PRESET``       model preset from the registry (``paper``, ``tiny``, or registered):
                          :data:`models`
``--vocab SPEC``          vocabulary: a file, ``voc``/``context``/``coco-object``, or ``a,b,c``:
                          :data:`vocab`
``--device``              ``auto|cpu|cuda[:N]``: :data:`device`, resolved by :func:`resolve_device`
``--dtype``               ``auto|float32|float16|bfloat16``: :data:`dtype`, :func:`resolve_dtype`
``--seed INT``            random seed in [0, 2**32 − 1] (numpy's range): :func:`seed`
``--batch-size INT``      images per forward pass: :func:`batch_size`
``--overwrite``           recompute outputs that exist: :data:`overwrite`
``--shard K/N``           the K-th of N equal parts of the work: :data:`shard`, :class:`~ovdiff_cli.shard.Shard`
``--json``                machine-readable output on stdout: :data:`json_output`
``-v/-q``                 more / less on stderr: :data:`verbosity`
``--bank DIR|FILE``       banks of prototypes (repeatable, required): :func:`banks`
``--overlay``             also write a picture over each input: :func:`overlay`
``-n, --num-images INT``  support images per class: :func:`num_images`
``--steps INT``           sampling steps: :func:`steps`
``--template TEXT``       the prompt template: :func:`template`
``--proposer NAME``       where mask proposals come from: :func:`proposer`
``-x, --extractor NAME``  feature extractors (repeatable): :func:`extractors`
``--no-prefilter``        every class active, no CLIP pre-filter: :data:`no_prefilter`
``--pamr``                refine the scores with PAMR: :func:`pamr`
``--no-background``       the no-background protocol: :func:`no_background`
``--dataset NAME``        a benchmark dataset's root, by reader name: :func:`dataset`
========================  ==================================================================

Where two commands word an option differently (their own context), the factory takes the help
text and everything else (names, type, default, metavar) stays here.

:func:`model_run` applies the usual set of a model-running command at once, and
:func:`expand_stdin` turns a ``-`` argument into the lines of stdin. Every float option of every
command is a :func:`finite` (NaN and ±inf are usage errors at parse time, exit 2).

Nothing here imports torch at import time; the resolvers import it when called.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ovdiff_cli import log
from ovdiff_cli.core.settings import DEFAULT_EXTRACTORS, TEMPLATE, SampleSettings
from ovdiff_cli.errors import BadInput
from ovdiff_cli.formats.datasets import READERS
from ovdiff_cli.shard import Shard  # re-exported: commands annotate their --shard parameter with it

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    # -v and -q feed one level. ctx.meta is shared by the group's and the command's contexts, so
    # `ovdiff -v models check` and `ovdiff models check -v` both work; an absent flag changes nothing.
    if not value:
        return
    ctx.meta[f"ovdiff.{param.name}"] = value
    log.set_verbosity(ctx.meta.get("ovdiff._verbose", 0) - ctx.meta.get("ovdiff._quiet", 0))


def verbosity(f: F) -> F:
    """``-v/--verbose`` and ``-q/--quiet`` (counted; stderr only)."""
    f = click.option("-q", "--quiet", "_quiet", count=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity, help="Less on stderr: warnings and errors only, no progress bars.")(f)
    f = click.option("-v", "--verbose", "_verbose", count=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity, help="More on stderr: debug messages and tracebacks.")(f)
    return f


def output(help_text: str = "Where outputs go.", *, default: str | None = None, file_okay: bool = True,
           dir_okay: bool = True, path_type: type | None = None,
           value_type: click.ParamType | None = None) -> Callable[[F], F]:
    """``-o/--output PATH`` with a per-command help text and default.

    ``value_type`` replaces the path type where the value is not always a path (``-`` for stdout);
    the path settings (``file_okay``, ``dir_okay``, ``path_type``) then do not apply.
    """
    param_type = value_type or click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=path_type)
    return click.option("-o", "--output", "output", type=param_type, default=default,
                        show_default=default is not None, help=help_text)


models = click.option("--models", "models", default="paper", show_default=True, metavar="PRESET",
                      help="Model preset from the registry: `paper`, `tiny` (random weights, for tests), "
                           "or one registered by a plugin (see `ovdiff models list`).")

vocab = click.option("--vocab", "vocab", metavar="FILE|voc|context|coco-object|a,b,c",
                     help="The vocabulary: a file (one class per line: name[TAB prompt[TAB thing|stuff]]), "
                          "a built-in benchmark vocabulary, or a comma-separated list.")

#: What --device accepts; a GPU index has at most three digits (torch refuses larger numbers).
DEVICE_PATTERN = r"auto|cpu|cuda(:\d{1,3})?"


def _device_callback(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # Checked at parse time (exit 2); whether the GPU exists is checked when the command runs.
    if not re.fullmatch(DEVICE_PATTERN, value.strip().lower()):
        raise click.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


device = click.option("--device", "device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                      callback=_device_callback,
                      help="Where to run: auto picks the GPU when there is one (under torchrun, cuda:LOCAL_RANK).")

dtype = click.option("--dtype", "dtype", default="auto", show_default=True,
                     type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
                     help="Precision of the networks: auto = float16 on a GPU, float32 on the CPU.")

overwrite = click.option("--overwrite", is_flag=True, help="Recompute outputs that already exist.")

json_output = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


#: numpy's seeds are unsigned 32-bit integers; torch takes them too.
SEED_MAX = 2**32 - 1
#: Most images per support set: their files are named 00000.png … 99999.png.
MAX_IMAGES = 100_000
#: Most sampling steps: the diffusion model knows 1000 noise levels.
MAX_STEPS = 1000
#: Largest short side segment resizes an image to (a 8192² float32 score map per class is 256 MiB).
MAX_SHORT_SIDE = 8192


class FiniteFloat(click.FloatRange):
    """A float option that is a real number (neither NaN nor ±inf), optionally within bounds.

    click's FloatRange lets NaN through (every comparison with NaN is false) and ``inf`` through
    when unbounded; a NaN threshold would fail only after all the work, or silently change results.
    """

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def finite(min: float | None = None, max: float | None = None) -> FiniteFloat:  # noqa: A002 (click's names)
    """The click type of a float option: finite, and within [min, max] where given."""
    return FiniteFloat(min=min, max=max)


def seed(default: int) -> Callable[[F], F]:
    """``--seed INT`` with the stage's default, in numpy's seed range [0, 2**32 − 1]."""
    return click.option("--seed", "seed", type=click.IntRange(0, SEED_MAX), default=default, show_default=True,
                        help="Random seed (0 … 4294967295).")


def batch_size(default: int) -> Callable[[F], F]:
    """``--batch-size INT`` (images per forward pass) with the stage's default."""
    return click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=default,
                        show_default=True, help="Images per forward pass.")


def banks(help_text: str) -> Callable[[F], F]:
    """``--bank DIR|FILE`` (repeatable, at least one): banks from ``ovdiff filter-stuff``."""
    return click.option("--bank", "banks", multiple=True, required=True, metavar="DIR|FILE", help=help_text)


def overlay(help_text: str) -> Callable[[F], F]:
    """``--overlay``: also write a picture for a person to check; what it shows is the command's."""
    return click.option("--overlay", "overlay", is_flag=True, help=help_text)


def num_images(help_text: str) -> Callable[[F], F]:
    """``-n/--num-images INT``: support images per class, with sampling's default."""
    return click.option("-n", "--num-images", "num_images", type=click.IntRange(1, MAX_IMAGES),
                        default=SampleSettings.num_images, show_default=True, help=help_text)


def steps(help_text: str) -> Callable[[F], F]:
    """``--steps INT``: sampling steps, with sampling's default."""
    return click.option("--steps", "steps", type=click.IntRange(1, MAX_STEPS), default=SampleSettings.steps,
                        show_default=True, help=help_text)


def template(help_text: str) -> Callable[[F], F]:
    """``--template TEXT``: the prompt template, ``{}`` standing for the class prompt."""
    return click.option("--template", "template", default=TEMPLATE, show_default=True, help=help_text)


def proposer(help_text: str) -> Callable[[F], F]:
    """``--proposer NAME``: where instance proposals come from (``auto`` picks)."""
    return click.option("--proposer", "proposer", default="auto", show_default=True,
                        metavar="auto|cutler|threshold|NAME", help=help_text)


def extractors(help_text: str, *, metavar: str = "NAME") -> Callable[[F], F]:
    """``-x/--extractor NAME`` (repeatable); the help ends with the extractors used when none is given.

    None given parses as ``()``; the command falls back to :data:`DEFAULT_EXTRACTORS`.
    """
    defaults = ", ".join(DEFAULT_EXTRACTORS)
    return click.option("-x", "--extractor", "extractors", multiple=True, metavar=metavar,
                        help=f"{help_text}; repeat for several [default: {defaults}].")


no_prefilter = click.option("--no-prefilter", "no_prefilter", is_flag=True,
                            help="Make every class active (no CLIP pre-filter).")


def pamr(help_text: str) -> Callable[[F], F]:
    """``--pamr``: refine the score maps with PAMR before the argmax."""
    return click.option("--pamr", "pamr", is_flag=True, help=help_text)


def no_background(help_text: str) -> Callable[[F], F]:
    """``--no-background``: the no-background protocol, as the command applies it."""
    return click.option("--no-background", "no_background", is_flag=True, help=help_text)


def dataset(help_text: str) -> Callable[[F], F]:
    """``--dataset NAME``: a benchmark dataset's root, one of the names :data:`READERS` reads (in its order)."""
    return click.option("--dataset", "dataset", type=click.Choice(list(READERS)), help=help_text)


def _env_int(env: Mapping[str, str], name: str, *, minimum: int, fix: str) -> int:
    """The whole number in ``env[name]``, at least ``minimum``; a one-line BadInput naming ``name`` otherwise."""
    text = env.get(name)
    if text is None:
        raise BadInput(f"{name} is not set", fix)
    try:
        value = int(text.strip())
    except ValueError:
        raise BadInput(f"{name}={text!r} is not a whole number", fix) from None
    if value < minimum:
        raise BadInput(f"{name}={value} is below {minimum}", fix)
    return value


def _slurm_shard(env: Mapping[str, str]) -> Shard:
    """The array task's shard: ``TASK_ID - TASK_MIN + 1`` of ``TASK_COUNT`` (or ``TASK_MAX - TASK_MIN + 1``)."""
    fix = "pass --shard K/N, which overrides the Slurm array's variables"
    task = _env_int(env, "SLURM_ARRAY_TASK_ID", minimum=0, fix=fix)
    first = _env_int(env, "SLURM_ARRAY_TASK_MIN", minimum=0, fix=fix) if "SLURM_ARRAY_TASK_MIN" in env else 0
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", minimum=1, fix=fix)
    else:
        count = _env_int(env, "SLURM_ARRAY_TASK_MAX", minimum=first, fix=fix) - first + 1
    if not first <= task < first + count:
        raise BadInput(f"SLURM_ARRAY_TASK_ID={task} is outside the array's {count} tasks from {first}", fix)
    return Shard(task - first + 1, count)


def _torchrun_shard(env: Mapping[str, str]) -> Shard:
    """torchrun's (torch.distributed's) process: ``RANK + 1`` of ``WORLD_SIZE``."""
    fix = "set RANK (0 … WORLD_SIZE − 1) and WORLD_SIZE together, as torchrun does, or pass --shard K/N"
    size = _env_int(env, "WORLD_SIZE", minimum=1, fix=fix)
    rank = _env_int(env, "RANK", minimum=0, fix=fix)
    if rank >= size:
        raise BadInput(f"RANK={rank} is not below WORLD_SIZE={size}", fix)
    return Shard(rank + 1, size)


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard to do, by precedence (docs/design.md §4):

    1. ``K/N`` given (``--shard``): exactly that; the environment is not read.
    2. A Slurm job array (``SLURM_ARRAY_TASK_ID`` set) and torchrun (``RANK``/``WORLD_SIZE`` set) together:
       array task ``a`` of ``A`` (1-based) and process ``RANK`` of ``W`` do shard ``(a − 1)·W + RANK + 1`` of
       ``A·W``, so every array task splits its part among its processes and all parts cover the work once.
    3. Only one of them: its shard (task ``a`` of ``A``, or ``RANK + 1`` of ``WORLD_SIZE``).
    4. Neither: the whole work (1/1).

    A malformed or half-set variable is a one-line BadInput naming it; the chosen source is logged.
    """
    env = os.environ if environ is None else environ
    if text:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise BadInput(f"--shard {text!r} is not K/N", "write e.g. --shard 2/8 for the second of eight parts")
        return Shard(int(m.group(1)), int(m.group(2)))
    array = _slurm_shard(env) if "SLURM_ARRAY_TASK_ID" in env else None
    # Either variable means torchrun: a lone RANK would otherwise silently do the whole work in every process.
    ranks = _torchrun_shard(env) if "WORLD_SIZE" in env or "RANK" in env else None
    if array is not None and ranks is not None:
        shard = Shard((array.index - 1) * ranks.count + ranks.index, array.count * ranks.count)
        log.logger.info("shard %s from the Slurm array (task %s of %d) and torchrun (RANK %d of WORLD_SIZE %d)",
                        shard, env["SLURM_ARRAY_TASK_ID"], array.count, ranks.index - 1, ranks.count)
    elif array is not None:
        shard = array
        log.logger.info("shard %s from the Slurm array (task %s)", shard, env["SLURM_ARRAY_TASK_ID"])
    elif ranks is not None:
        shard = ranks
        log.logger.info("shard %s from torchrun (RANK %d of WORLD_SIZE %d)", shard, ranks.index - 1, ranks.count)
    else:
        shard = Shard()
    return shard


def _shard_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Shard:
    try:
        return parse_shard(value)
    except BadInput as e:
        raise click.BadParameter(str(e)) from None


shard = click.option("--shard", "shard", metavar="K/N", callback=_shard_callback,
                     help="Do the K-th of N equal parts of the work (1-based). When not given: from a Slurm "
                          "job array (SLURM_ARRAY_TASK_ID …) and/or torchrun (RANK, WORLD_SIZE); with both, "
                          "each array task's part is split among its processes.")


def resolve_device(spec: str, environ: Mapping[str, str] | None = None) -> torch.device:
    """``auto`` → a GPU when there is one, else the CPU; ``cuda:N`` must exist.

    Under torchrun (``LOCAL_RANK`` set) ``auto`` takes ``cuda:LOCAL_RANK`` modulo the visible GPUs, so
    that one process per GPU does not pile onto ``cuda:0`` (and a process pinned with
    ``CUDA_VISIBLE_DEVICES`` to one GPU takes that one); otherwise the first GPU.
    """
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        env = os.environ if environ is None else environ
        if "LOCAL_RANK" not in env:
            return torch.device("cuda")
        local = _env_int(env, "LOCAL_RANK", minimum=0,
                         fix="set it to the process's index on this machine (torchrun does), or pass --device cuda:N")
        count = torch.cuda.device_count()
        dev = torch.device("cuda", local % count)
        torch.cuda.set_device(dev)  # also the current device: calls that take none then use this GPU, not cuda:0
        log.logger.info("device %s from LOCAL_RANK %d (%d GPU%s visible)", dev, local, count, "" if count == 1 else "s")
        return dev
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise BadInput(f"--device {spec!r} is not auto, cpu or cuda[:N]")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {spec} asked for, but no CUDA GPU is visible", "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible",
                           f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return dev


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on a GPU, float32 on the CPU (half precision on a CPU is slow and lossy)."""
    import torch

    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec]
    except KeyError:
        raise BadInput(f"--dtype {spec!r} is not auto, float32, float16 or bfloat16") from None


def resolve_dtypes(spec: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(SD's precision, the ViTs' precision) for ``--dtype``. The sources name half precision for SD
    only, so with ``auto`` the ViTs (DINO, CLIP, MAE) stay in float32 (docs/method.md §4.1)."""
    import torch

    net = resolve_dtype(spec, device)
    return net, (torch.float32 if spec == "auto" else net)


def expand_stdin(args: Sequence[str], stdin: Iterable[str] | None = None) -> list[str]:
    """Command arguments with each ``-`` replaced by the lines of stdin.

    Paths are taken verbatim: an argument is never changed, and a stdin line loses only its line
    end (``\\n`` or ``\\r\\n``), so a file whose name starts or ends with a space is found. Blank
    stdin lines (empty or spaces only) are skipped; an empty argument is an error, as ``Path("")``
    would silently mean the current folder.
    """
    import sys

    out: list[str] = []
    for a in args:
        if a == "":
            raise BadInput("a path argument is empty ('')", "give a file or folder name, or - to read them from stdin")
        if a != "-":
            out.append(a)
            continue
        for line in sys.stdin if stdin is None else stdin:
            path = line.removesuffix("\n").removesuffix("\r")
            if path.strip():
                out.append(path)
    return out


def model_run(batch_default: int) -> Callable[[F], F]:
    """The options of a command that runs models over a batch of inputs, in one place:
    --models, --device, --dtype, --batch-size, --overwrite, -v/-q."""

    def apply(f: F) -> F:
        for decorator in (verbosity, overwrite, batch_size(batch_default), dtype, device, models):
            f = decorator(f)
        return f

    return apply
