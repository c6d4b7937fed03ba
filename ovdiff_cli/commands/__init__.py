"""One thin module per command: parse, validate, call one stage function, report.

:data:`COMMANDS` is the explicit list of registered commands (name → ``module:attribute``). A
command is listed only once it works end to end.
"""

COMMANDS: dict[str, str] = {
    "attribute": "ovdiff_cli.commands.attribute:attribute",
    "classify": "ovdiff_cli.commands.classify:classify",
    "explain": "ovdiff_cli.commands.explain:explain",
    "filter-stuff": "ovdiff_cli.commands.filter_stuff:filter_stuff",
    "info": "ovdiff_cli.commands.info:info",
    "mask": "ovdiff_cli.commands.mask:mask",
    "models": "ovdiff_cli.commands.models:models",
    "prototype": "ovdiff_cli.commands.prototype:prototype",
    "run": "ovdiff_cli.commands.run:run",
    "sample": "ovdiff_cli.commands.sample:sample",
    "score": "ovdiff_cli.commands.score:score",
    "segment": "ovdiff_cli.commands.segment:segment",
}
