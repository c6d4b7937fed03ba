"""``python -m ovdiff_cli`` runs the command line."""

from ovdiff_cli.cli import main

main()
