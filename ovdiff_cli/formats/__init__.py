"""The only code that reads or writes bytes.

Every writer is atomic (:mod:`.atomic`); every reader validates what it reads and fails with a
:class:`~ovdiff_cli.errors.BadFile` that names the file, the problem and the command that makes
the right file.
"""
