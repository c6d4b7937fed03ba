"""The ``ovdiff`` command group.

Commands are listed explicitly in :data:`ovdiff_cli.commands.COMMANDS` and imported only when
run, so ``ovdiff --version`` and ``ovdiff --help`` stay cheap (no torch import). Expected errors
(:class:`~ovdiff_cli.errors.OvdiffError`) become one line on stderr and exit code 1.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Any

import click

from ovdiff_cli import __version__, log, options
from ovdiff_cli.commands import COMMANDS
from ovdiff_cli.errors import OvdiffError


class OneLineError(click.ClickException):
    """Prints ``ovdiff: error: <message>`` and exits with 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"ovdiff: error: {self.format_message()}", err=True)


class OneLineUsageError(click.UsageError):
    """A usage error (a bad option value, a missing argument) as one line: the problem and where
    the help is; exits with 2 like click's own."""

    def show(self, file: Any = None) -> None:
        where = f"; see `{self.ctx.command_path} --help`" if self.ctx is not None else ""
        text = " ".join(self.format_message().split()).rstrip(".")  # one line, whatever the value quoted
        click.echo(f"ovdiff: error: {text}{where}", err=True)


def _one_line(e: click.UsageError) -> OneLineUsageError:
    if isinstance(e, OneLineUsageError):  # a subcommand's, already converted
        return e
    # format_message, not message: a bad parameter's message lacks the option's name, a missing one's is empty.
    return OneLineUsageError(e.format_message(), e.ctx)


class OvdiffGroup(click.Group):
    """A group whose commands come from an explicit list of ``module:attribute`` names."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        log.begin()  # each invocation starts from the default level (-v/-q adjust it), nothing said yet
        return super().main(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Pipeline order, not alphabetical: the order is what a newcomer needs to learn.
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise _one_line(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _one_line(e) from None
        except OvdiffError as e:
            if log.verbosity() > 0:
                log.logger.debug("traceback of the error below", exc_info=True)
            raise OneLineError(str(e)) from None
        except KeyboardInterrupt:
            click.echo("ovdiff: error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=OvdiffGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog='Example: ovdiff run --vocab "cat,donut with chocolate glaze" photo.jpg -o work')
@click.version_option(__version__, "--version", prog_name="ovdiff", message="%(prog)s %(version)s")
@options.verbosity
def main() -> None:
    """Open-vocabulary segmentation without training (OVDiff), one stage per command.

    \b
    sample → attribute → mask → prototype → filter-stuff → classify → segment → score
    `ovdiff run` does every stage up to segment in one command;
    `ovdiff score` compares with ground truth.

    Each stage reads and writes files (safetensors, PNG, JSON Lines), prints the paths it wrote
    on stdout, and logs to stderr.
    """
    # A terminated run unwinds like an interrupt, so atomic writers remove their temporary files.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)
