"""Shared options: shards, devices, dtypes."""

from __future__ import annotations

import re

import pytest
import torch

from ovdiff_cli.errors import BadInput
from ovdiff_cli.options import Shard, parse_shard, resolve_device, resolve_dtype


def test_shards_partition_the_work_in_order() -> None:
    items = list(range(10))
    parts = [Shard(k, 3).select(items) for k in (1, 2, 3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_more_shards_than_items_gives_empty_parts() -> None:
    parts = [Shard(k, 4).select(["a", "b"]) for k in (1, 2, 3, 4)]
    assert sorted(sum(parts, [])) == ["a", "b"]
    assert [len(p) for p in parts] == [0, 1, 0, 1]


@pytest.mark.parametrize("text,expected", [("1/1", Shard(1, 1)), ("2/8", Shard(2, 8)), (" 3 / 3 ", Shard(3, 3))])
def test_parse_shard(text, expected) -> None:
    assert parse_shard(text, environ={}) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "2", "1/2/3"])
def test_bad_shards_are_input_errors(text) -> None:
    with pytest.raises(BadInput):
        parse_shard(text, environ={})


def test_shard_from_a_slurm_array() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard(None, environ=env) == Shard(3, 4)
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9"}
    assert parse_shard(None, environ=env) == Shard(1, 10)


def test_explicit_shard_wins_over_slurm() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert parse_shard("1/4", environ=env) == Shard(1, 4)


def test_no_shard_means_all_the_work() -> None:
    assert parse_shard(None, environ={}) == Shard(1, 1)


@pytest.fixture
def ovdiff_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog that sees the ovdiff logger's info lines (it does not propagate to the root by default)."""
    import logging

    monkeypatch.setattr(logging.getLogger("ovdiff"), "propagate", True)
    caplog.set_level("INFO", logger="ovdiff")
    return caplog


def test_shard_from_torchrun(ovdiff_log) -> None:
    assert parse_shard(None, environ={"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == Shard(3, 4)
    assert parse_shard(None, environ={"RANK": "0", "WORLD_SIZE": "1"}) == Shard(1, 1)
    assert "shard 3/4 from torchrun (RANK 2 of WORLD_SIZE 4)" in ovdiff_log.text


def test_slurm_array_and_torchrun_split_each_task_among_its_processes(ovdiff_log) -> None:
    # an array of 3 tasks (ids 4, 5, 6) with 2 processes each: 6 shards, task id 5 (the 2nd) holds shards 3 and 4
    slurm = {"SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    shards = [parse_shard(None, environ={**slurm, "SLURM_ARRAY_TASK_ID": str(t), "RANK": str(r), "WORLD_SIZE": "2"})
              for t in (4, 5, 6) for r in (0, 1)]
    assert shards == [Shard(k, 6) for k in range(1, 7)]
    assert "shard 6/6 from the Slurm array (task 6 of 3) and torchrun (RANK 1 of WORLD_SIZE 2)" in ovdiff_log.text
    # every item of the work is done by exactly one (task, process)
    items = list(range(20))
    assert sorted(sum((s.select(items) for s in shards), [])) == items


def test_explicit_shard_wins_over_torchrun_and_slurm() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert parse_shard("3/5", environ=env) == Shard(3, 5)
    assert parse_shard("3/5", environ={"RANK": "x"}) == Shard(3, 5)  # not even read


@pytest.mark.parametrize("env,message", [
    ({"RANK": "1"}, "WORLD_SIZE is not set"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK='one' is not a whole number"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 is below 1"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK=-1 is below 0"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_MAX is not set"),
    ({"SLURM_ARRAY_TASK_ID": "", "SLURM_ARRAY_TASK_COUNT": "2"}, "SLURM_ARRAY_TASK_ID='' is not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"},
     "SLURM_ARRAY_TASK_ID=5 is outside the array's 4 tasks from 1"),
])
def test_malformed_shard_variables_are_one_line_errors_naming_them(env, message) -> None:
    with pytest.raises(BadInput, match=re.escape(message)) as e:
        parse_shard(None, environ=env)
    assert "\n" not in str(e.value) and "--shard K/N" in str(e.value)


def test_a_bad_shard_variable_is_a_usage_error_of_the_command(runner, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "4")
    result = runner.invoke(_probe_command(), [])
    assert result.exit_code == 2 and "RANK=4 is not below WORLD_SIZE=4" in result.output


class _FakeCuda:
    """torch.cuda as a machine with ``count`` GPUs would answer; records set_device."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.current: torch.device | None = None
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(self, "current", torch.device(d)))


@pytest.mark.parametrize("local_rank,count,expected", [("0", 4, 0), ("3", 4, 3), ("5", 4, 1), ("1", 1, 0)])
def test_auto_device_under_torchrun_takes_the_local_ranks_gpu(monkeypatch, ovdiff_log, local_rank, count,
                                                               expected) -> None:
    cuda = _FakeCuda(monkeypatch, count)
    dev = resolve_device("auto", environ={"LOCAL_RANK": local_rank, "RANK": "7", "WORLD_SIZE": "8"})
    assert dev == torch.device("cuda", expected) and cuda.current == dev
    assert f"device cuda:{expected} from LOCAL_RANK {local_rank}" in ovdiff_log.text


def test_auto_device_without_torchrun_or_gpu(monkeypatch) -> None:
    cuda = _FakeCuda(monkeypatch, 2)
    assert resolve_device("auto", environ={}) == torch.device("cuda") and cuda.current is None
    assert resolve_device("cpu", environ={"LOCAL_RANK": "1"}) == torch.device("cpu")  # only auto reads it
    _FakeCuda(monkeypatch, 0)
    assert resolve_device("auto", environ={"LOCAL_RANK": "1"}) == torch.device("cpu")


def test_a_malformed_local_rank_is_a_one_line_error(monkeypatch) -> None:
    _FakeCuda(monkeypatch, 2)
    with pytest.raises(BadInput, match=r"LOCAL_RANK='a' is not a whole number; .*--device cuda:N"):
        resolve_device("auto", environ={"LOCAL_RANK": "a"})


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(BadInput):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_dtype_resolution() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", gpu) == torch.float16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(BadInput):
        resolve_dtype("float8", cpu)


def _probe_command():
    import click

    from ovdiff_cli import options

    @click.command()
    @options.output("Where outputs go.")
    @options.models
    @options.vocab
    @options.device
    @options.dtype
    @options.seed(42)
    @options.batch_size(8)
    @options.overwrite
    @options.shard
    @options.json_output
    @options.verbosity
    def probe(**kwargs):
        click.echo(repr(sorted(kwargs.items())))

    return probe


def test_shared_options_parse_with_their_defaults(runner, monkeypatch) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(_probe_command(), [])
    assert result.exit_code == 0
    assert result.stdout.strip() == repr(sorted({
        "output": None, "models": "paper", "vocab": None, "device": "auto", "dtype": "auto", "seed": 42,
        "batch_size": 8, "overwrite": False, "shard": Shard(1, 1), "as_json": False}.items()))


def test_shared_options_take_values(runner) -> None:
    result = runner.invoke(_probe_command(), ["-o", "out", "--models", "tiny", "--vocab", "voc", "--device", "cpu",
                                              "--dtype", "float16", "--seed", "7", "--batch-size", "2",
                                              "--overwrite", "--shard", "2/4", "--json", "-q"])
    assert result.exit_code == 0
    values = dict(eval(result.stdout))  # the repr of plain values and a Shard
    assert values["shard"] == Shard(2, 4) and values["batch_size"] == 2 and values["dtype"] == "float16"


@pytest.mark.parametrize("args", [["--shard", "5/4"], ["--batch-size", "0"], ["--dtype", "float8"]])
def test_bad_shared_option_values_are_usage_errors(runner, args) -> None:
    result = runner.invoke(_probe_command(), args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def _stage_options_command():
    import click

    from ovdiff_cli import options

    @click.command()
    @options.banks("Banks.")
    @options.overlay("Overlay.")
    @options.num_images("Images.")
    @options.steps("Steps.")
    @options.template("Template.")
    @options.proposer("Proposer.")
    @options.extractors("Feature extractor")
    @options.no_prefilter
    @options.pamr("PAMR.")
    @options.no_background("No background.")
    @options.dataset("Dataset.")
    def probe(**kwargs):
        click.echo(repr(sorted(kwargs.items())))

    return probe


def test_stage_options_parse_with_their_defaults(runner) -> None:
    result = runner.invoke(_stage_options_command(), ["--bank", "b"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == repr(sorted({
        "banks": ("b",), "overlay": False, "num_images": 32, "steps": 30, "template": "A good picture of a {}",
        "proposer": "auto", "extractors": (), "no_prefilter": False, "pamr": False, "no_background": False,
        "dataset": None}.items()))


def test_stage_options_take_values(runner) -> None:
    result = runner.invoke(_stage_options_command(), [
        "--bank", "a", "--bank", "b", "--overlay", "-n", "2", "--steps", "5", "--template", "{}!",
        "--proposer", "threshold", "-x", "dino", "-x", "mae", "--no-prefilter", "--pamr", "--no-background",
        "--dataset", "context59"])
    assert result.exit_code == 0, result.output
    values = dict(eval(result.stdout))
    assert values == {"banks": ("a", "b"), "overlay": True, "num_images": 2, "steps": 5, "template": "{}!",
                      "proposer": "threshold", "extractors": ("dino", "mae"), "no_prefilter": True, "pamr": True,
                      "no_background": True, "dataset": "context59"}


@pytest.mark.parametrize("args", [["-n", "0"], ["-n", "100001"], ["--steps", "1001"], ["--dataset", "ade"]])
def test_bad_stage_option_values_are_usage_errors(runner, args) -> None:
    result = runner.invoke(_stage_options_command(), ["--bank", "b", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_dataset_choices_are_the_readers_in_order_and_extractor_help_names_the_defaults(runner) -> None:
    result = runner.invoke(_stage_options_command(), ["--help"], terminal_width=200)
    assert "[voc|context|context59|coco-object]" in result.output
    assert "Feature extractor; repeat for several [default: sd, dino, clip]." in result.output


def test_an_option_shared_by_commands_parses_the_same_in_each() -> None:
    import importlib

    from ovdiff_cli.commands import COMMANDS

    seen: dict[str, tuple] = {}
    for target in COMMANDS.values():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        for sub in [command, *getattr(command, "commands", {}).values()]:
            for p in sub.params:
                for opt in p.opts:
                    shape = (p.name, getattr(p, "is_flag", False), p.multiple, p.nargs)
                    assert seen.setdefault(opt, shape) == shape, (opt, target)
    assert seen["--dataset"] == ("dataset", False, False, 1) and seen["-x"] == ("extractors", False, True, 1)


# ---------------------------------------------------------------------------------------------
# numbers are checked at parse time; paths are verbatim


def _numbers_command():
    import click

    from ovdiff_cli import options

    @click.command()
    @options.seed(42)
    @click.option("--x", type=options.finite(), default=0.0)
    @click.option("--unit", type=options.finite(0, 1), default=0.5)
    def probe(seed, x, unit):
        click.echo(repr((seed, x, unit)))

    return probe


@pytest.mark.parametrize("args, values", [
    ([], (42, 0.0, 0.5)),
    (["--seed", "0", "--x", "-1e300", "--unit", "1"], (0, -1e300, 1.0)),
    (["--seed", str(2**32 - 1), "--x", "2.5", "--unit", "0"], (2**32 - 1, 2.5, 0.0)),
])
def test_numbers_in_range_parse(runner, args, values) -> None:
    result = runner.invoke(_numbers_command(), args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == repr(values)


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "--seed"), (["--seed", str(2**32)], "--seed"), (["--seed", str(2**70)], "--seed"),
    (["--x", "nan"], "not a finite number"), (["--x", "inf"], "not a finite number"),
    (["--x", "-inf"], "not a finite number"), (["--x", "1e400"], "not a finite number"),
    (["--unit", "nan"], "not a finite number"), (["--unit", "1.5"], "--unit"), (["--x", "ten"], "--x"),
])
def test_bad_numbers_are_usage_errors(runner, args, needle) -> None:
    result = runner.invoke(_numbers_command(), args)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command, args", [
    ("sample", ["cat", "--seed", "-1"]), ("sample", ["cat", "--seed", str(2**70)]),
    ("sample", ["cat", "--guidance", "nan"]), ("sample", ["cat", "--guidance", "inf"]),
    ("run", ["x.png", "--vocab", "cat,", "--seed", "-1"]),
    ("segment", ["x.png", "--bank", "b", "--score-floor", "nan"]),
    ("segment", ["x.png", "--bank", "b", "--bg-threshold", "nan"]),
    ("filter-stuff", ["p.safetensors", "--vocab", "cat,", "--threshold", "nan"]),
    ("mask", ["s", "--fallback-fg", "nan"]), ("mask", ["s", "--fallback-bg", "nan"]),
    ("mask", ["s", "--score-threshold", "nan"]), ("mask", ["s", "--bg-attn-max", "inf"]),
])
def test_commands_refuse_bad_numbers_in_one_line_before_any_work(runner, tmp_path, monkeypatch, command,
                                                                 args) -> None:
    from ovdiff_cli.cli import main

    monkeypatch.chdir(tmp_path)  # outputs with default names would land here
    tiny = [] if command == "filter-stuff" else ["--models", "tiny"]  # filter-stuff runs no model
    result = runner.invoke(main, [command, *args, *tiny])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovdiff: error: Invalid value for '--"), result.stderr
    assert lines[0].endswith(f"{command} --help`")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line(runner) -> None:
    from ovdiff_cli.cli import main

    for args in (["--bogus"], ["bogus"], ["segment"], ["models", "bogus"], ["classify", "x.png"]):
        result = runner.invoke(main, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("ovdiff: error: "), (args, result.stderr)


def test_expand_stdin_takes_paths_verbatim() -> None:
    from ovdiff_cli.options import expand_stdin

    lines = [" lead.png\n", "trail.png \r\n", "\n", "   \n", "\tx y.png", "last.png\n"]
    assert expand_stdin([" a.png", "-", "b.png "], lines) == [
        " a.png", " lead.png", "trail.png ", "\tx y.png", "last.png", "b.png "]


def test_an_empty_path_argument_is_an_error() -> None:
    from ovdiff_cli.options import expand_stdin

    with pytest.raises(BadInput, match="empty"):
        expand_stdin(["a.png", ""], [])
