"""The one error type users see.

Every error that reaches the command line is a :class:`MailwardenError`: it carries a stable
``code`` that docs explain and scripts can match, and a message that says what is wrong and where.
The CLI prints it on one line and exits non-zero; nothing below the CLI prints tracebacks to users.
"""

from __future__ import annotations


class MailwardenError(Exception):
    """An error with a stable code and a message meant for an operator."""

    code = "MW-ERROR"
    exit_status = 2

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(MailwardenError):
    """The site file (or another configuration file) is not valid."""

    code = "CONFIG-INVALID"


class InputError(MailwardenError):
    """A file or argument supplied by the operator is malformed (CSV, ISPDB XML, …)."""

    code = "INPUT-INVALID"


class DirectoryError(MailwardenError):
    """The user directory could not answer (unreachable, bad credentials, corrupt database)."""

    code = "DIRECTORY-ERROR"
