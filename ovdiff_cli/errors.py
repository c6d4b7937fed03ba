"""Typed errors of the library.

Every expected failure is an :class:`OvdiffError`. Its ``str`` is one line that says what went
wrong, where, and how to fix it; the command line prints exactly that line and exits with 1
(``-v`` adds the traceback). Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class OvdiffError(Exception):
    """Base of all expected errors: a message and an optional fix, rendered on one line."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message if not self.fix else f"{self.message}; {self.fix}"
        # One line, always: messages may quote user text that contains newlines.
        return " ".join(text.split())


class BadInput(OvdiffError):
    """A value given by the user (a word, an option, a vocabulary) cannot be used."""


class BadFile(OvdiffError):
    """A file or folder is missing, unreadable, truncated, of another schema or malformed.

    ``made_by`` names the command that writes the right kind of file, so the message can say how
    to get one.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        problem: str,
        made_by: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.made_by = made_by
        if fix is None and made_by:
            fix = f"make it with `{made_by}`"
        # The message is folded onto one line; a path whose spaces would be lost is quoted.
        shown = self.path if self.path == " ".join(self.path.split()) else repr(self.path)
        super().__init__(f"{shown}: {problem}", fix)


class ModelUnavailable(OvdiffError):
    """A model cannot be loaded: not in the cache, a missing optional package, no GPU memory."""

    def __init__(self, model: str, where: str, fix: str) -> None:
        self.model = model
        self.where = where
        super().__init__(f"model {model} is not available (looked in {where})", fix)
