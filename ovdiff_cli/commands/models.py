"""``ovdiff models``: list the presets, check the local cache, download ahead of offline use."""

from __future__ import annotations

import json

import click

from ovdiff_cli import options
from ovdiff_cli.errors import OvdiffError


def _rows(statuses: list) -> None:
    for s in statuses:
        state = "ready" if s.ready else "missing " + ", ".join(list(s.missing_files) + list(s.missing_packages))
        if s.optional and not s.ready:
            state += " (optional)"
        click.echo(f"{s.preset}\t{s.key}\t{','.join(s.slots)}\t{state}\t{s.where}")


@click.group("models", short_help="List, check and download the model presets.",
             epilog="Example: ovdiff models check tiny")
@options.verbosity
def models() -> None:
    """List the model presets, check what is in the local cache, download what is missing."""


@models.command("list", epilog="Example: ovdiff models list --json")
@options.json_output
@options.verbosity
def list_presets(as_json: bool) -> None:
    """Print every preset and the model in each of its slots.

    Columns (tab-separated): preset, slot, model, description.
    """
    from ovdiff_cli.stages.models import describe_presets

    entries = describe_presets()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for p in entries:
        for slot, c in p["slots"].items():
            click.echo(f"{p['preset']}\t{slot}\t{c['model']}\t{c['description']}")


@models.command("check", epilog="Example: ovdiff models check paper || ovdiff models download paper")
@click.argument("presets", nargs=-1, metavar="[PRESET]...")
@options.json_output
@options.verbosity
def check(presets: tuple[str, ...], as_json: bool) -> None:
    """Say which models of the presets (all when none named) can be loaded here, without the network.

    Columns (tab-separated): preset, model, slots, state, where it is looked for. Exits with 1
    when a required model is missing; optional ones (MAE and the safety checker) are listed
    but do not fail the check.
    """
    from ovdiff_cli.stages.models import check as check_stage

    statuses = check_stage(list(presets) or None)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        _rows(statuses)
    missing = [s for s in statuses if not s.ready and not s.optional]
    if missing:
        names = sorted({s.preset for s in missing if s.missing_files})
        fixes = [f"`ovdiff models download {n}`" for n in names]
        fixes += [s.install or f"`pip install {' '.join(s.missing_packages)}`" for s in missing if s.missing_packages]
        raise OvdiffError(f"{len(missing)} required model(s) cannot be loaded here: "
                          f"{', '.join(s.key for s in missing)}", "run " + " and ".join(fixes))


@models.command("download", epilog="Example: ovdiff models download paper")
@click.argument("preset", default="paper")
@options.json_output
@options.verbosity
def download(preset: str, as_json: bool) -> None:
    """Fill the local caches with every model of PRESET (default: paper) for offline use.

    Hugging Face files go to the hub cache ($HF_HOME), checkpoints at URLs to torch's hub cache
    ($TORCH_HOME). Fails within seconds when the hosts cannot be reached.
    """
    from ovdiff_cli.stages.models import download as download_stage

    statuses = download_stage(preset)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        _rows(statuses)
