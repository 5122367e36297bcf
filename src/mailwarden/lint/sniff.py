"""Is this text a sendmail ``.mc`` or ``.cf`` at all? Refuse it before linting if not.

The sendmail parsers skip what they do not know, and a ``.mc`` without ``DAEMON_OPTIONS`` gets
``cf.m4``'s default daemons: so an empty file, a binary or a Postfix ``main.cf`` would be
"linted" into a table of defaults and "no findings", exit 0. A monitoring job that points at
the wrong file must fail instead. The test is deliberately generous: one line that only
sendmail would write (an m4 macro call, ``dnl``, a ``sendmail.cf`` command line) is enough.
"""

from __future__ import annotations

import re

from mailwarden.lint.errors import LintInputError

SNIFF_CHARS = 64 * 1024
"""Only the start is looked at for binary content: enough for any header, cheap for any size."""

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")

# m4 in a .mc: a macro call of cf.m4 (upper case) or an m4 builtin, or a dnl comment.
_MC_LINE = re.compile(
    r"\b(?:[A-Z][A-Z0-9_]{2,}\s*\(|(?:define|undefine|divert|include|ifdef|ifelse)\s*\(|dnl\b)"
)
# sendmail.cf command lines: version, options, macros, classes, mailers, rule sets, rules.
_CF_LINE = re.compile(
    r"^(?:V\d+(?:/\w+)?\s*$"
    r"|O\s*[A-Z][A-Za-z]+\s*(?:=|$)"
    r"|D[A-Za-z{]\S*"
    r"|C[A-Za-z{]\S*\s"
    r"|F[A-Za-z{]\S*\s"
    r"|M\w+,\s*P="
    r"|S\s*(?:\d+|[A-Za-z]\w*)(?:\s*=\s*\d+)?\s*$"
    r"|R\S.*\t"
    r"|K\w+\s+\w+"
    r"|H\?)"
)
_POSTFIX_MAIN = re.compile(r"^[a-z][a-z0-9_]*\s*=")
_POSTFIX_MASTER = re.compile(r"^\S+\s+(?:inet|unix|unix-dgram|fifo|pass)\s+[-yn]\s+[-yn]\s")


def _lines(text: str) -> list[str]:
    """The lines that say something: not blank, not a ``#`` comment."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def refuse_foreign(text: str, file: str) -> None:
    """Raise :class:`LintInputError` unless ``text`` looks like a sendmail ``.mc`` or ``.cf``."""
    head = text[:SNIFF_CHARS]
    if "\x00" in head or len(_CONTROL.findall(head)) > len(head) // 20:
        raise LintInputError(file, 0, "binary file, not a sendmail .mc or .cf")
    lines = _lines(text)
    if not lines:
        raise LintInputError(
            file, 0, "empty (nothing but blank lines and comments), not a sendmail .mc or .cf"
        )
    if any(_MC_LINE.search(line) or _CF_LINE.match(line) for line in lines):
        return
    postfix_main = sum(1 for line in lines if _POSTFIX_MAIN.match(line))
    postfix_master = sum(1 for line in lines if _POSTFIX_MASTER.match(line))
    if postfix_main or postfix_master:
        kind = (
            "main.cf (name = value lines)"
            if postfix_main >= postfix_master
            else "master.cf (service type private unpriv chroot ... lines)"
        )
        raise LintInputError(
            file,
            0,
            f"looks like a Postfix {kind}, not a sendmail .mc or .cf; "
            "lint Postfix with 'mailwarden lint postfix DIR'",
        )
    raise LintInputError(
        file,
        0,
        "not a sendmail .mc or .cf: no m4 macro call (DAEMON_OPTIONS(...), OSTYPE(...), dnl) "
        "and no sendmail.cf line (V10/Berkeley, O Option=value, ...)",
    )
