"""The command group: version, help, error handling, verbosity."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from ovdiff_cli import __version__
from ovdiff_cli.cli import main
from ovdiff_cli.commands import COMMANDS
from ovdiff_cli.errors import BadFile, BadInput, ModelUnavailable


def test_version_is_cheap_and_does_not_import_torch() -> None:
    code = ("import sys\n"
            "from ovdiff_cli.cli import main\n"
            "try:\n    main(['--version'])\n"
            "except SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"ovdiff {__version__}", "False"]


#: The order `ovdiff --help` must list the commands in: the stages as a pipeline runs them, then the rest.
HELP_ORDER = ["sample", "attribute", "mask", "prototype", "filter-stuff", "classify", "segment", "score",
              "run", "explain", "info", "models"]


def test_help_lists_the_commands_in_pipeline_order_with_the_flow_and_a_run_example(runner) -> None:
    result = runner.invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    head, _, commands = result.stdout.partition("Commands:")
    body, _, epilog = commands.partition("\n\n")
    assert [line.split()[0] for line in body.splitlines() if line.strip()] == HELP_ORDER
    assert sorted(HELP_ORDER) == sorted(COMMANDS)  # every registered command, and only those
    flow = " → ".join(HELP_ORDER[:8])
    assert flow in [line.strip() for line in head.splitlines()]
    assert epilog.strip() == 'Example: ovdiff run --vocab "cat,donut with chocolate glaze" photo.jpg -o work'


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_ends_with_an_example(runner, name) -> None:
    result = runner.invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert result.stdout.rstrip().splitlines()[-1].strip().startswith("Example: ovdiff ")


def test_unknown_command_is_a_usage_error(runner) -> None:
    result = runner.invoke(main, ["no-such-stage"])
    assert result.exit_code == 2


@pytest.mark.parametrize("error", [
    BadInput("the word is empty", "give a word"),
    BadFile("x/protos.safetensors", "is truncated", "ovdiff prototype"),
    ModelUnavailable("sd15", "the cache", "run `ovdiff models download`"),
])
def test_expected_errors_print_one_line_and_exit_1(monkeypatch, runner, error) -> None:
    @click.command("boom")
    def boom() -> None:
        raise error

    monkeypatch.setitem(COMMANDS, "boom", "tests.test_cli:_boom")
    monkeypatch.setattr(sys.modules[__name__], "_boom", boom, raising=False)
    result = runner.invoke(main, ["boom"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [f"ovdiff: error: {error}"]
    assert "Traceback" not in result.output


def test_bad_file_message_names_file_problem_and_command() -> None:
    e = BadFile("out/cat.dino.safetensors", "is a ovdiff.bank/1 file, expected ovdiff.prototypes/1",
                "ovdiff prototype")
    assert str(e) == ("out/cat.dino.safetensors: is a ovdiff.bank/1 file, expected ovdiff.prototypes/1; "
                      "make it with `ovdiff prototype`")


def test_messages_are_one_line_even_with_newlines_in_user_text() -> None:
    assert "\n" not in str(BadInput("class 'a\nb' is odd", "rename\nit"))


def test_verbose_shows_the_traceback_of_an_expected_error(monkeypatch, runner) -> None:
    @click.command("boom")
    def boom() -> None:
        raise BadInput("bad word")

    monkeypatch.setitem(COMMANDS, "boom", "tests.test_cli:_boom")
    monkeypatch.setattr(sys.modules[__name__], "_boom", boom, raising=False)
    result = runner.invoke(main, ["-v", "boom"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == "ovdiff: error: bad word"
