"""One thin module per command: parse, validate, call one stage function, report.

:data:`COMMANDS` is the explicit list of registered commands (name → ``module:attribute``), in the
order ``ovdiff --help`` shows them: the stages in pipeline order, then the rest. A command is
listed only once it works end to end.
"""

COMMANDS: dict[str, str] = {
    # The stages, in the order a pipeline runs them (``ovdiff --help`` lists them in this order) ...
    "sample": "ovdiff_cli.commands.sample:sample",
    "attribute": "ovdiff_cli.commands.attribute:attribute",
    "mask": "ovdiff_cli.commands.mask:mask",
    "prototype": "ovdiff_cli.commands.prototype:prototype",
    "filter-stuff": "ovdiff_cli.commands.filter_stuff:filter_stuff",
    "classify": "ovdiff_cli.commands.classify:classify",
    "segment": "ovdiff_cli.commands.segment:segment",
    "score": "ovdiff_cli.commands.score:score",
    # ... then the command that chains them, and the tools around them.
    "run": "ovdiff_cli.commands.run:run",
    "explain": "ovdiff_cli.commands.explain:explain",
    "info": "ovdiff_cli.commands.info:info",
    "models": "ovdiff_cli.commands.models:models",
}
