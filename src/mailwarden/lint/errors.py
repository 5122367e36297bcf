"""The error a malformed MTA configuration or lint argument raises: file, line and what is wrong."""

from __future__ import annotations

from mailwarden.errors import InputError


class LintInputError(InputError):
    """An MTA configuration file or a lint option cannot be understood.

    The message always starts with ``FILE:LINE:`` (or the option's name) so an operator can go
    straight to the offending line; the CLI prints it on one line, never as a traceback.
    """

    code = "LINT-INPUT"

    def __init__(self, file: str, line: int, message: str) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
