"""What every subcommand shares: consoles, the --config option, help formatting, output format
choice, exit statuses, tables that fit a terminal, plurals."""

from __future__ import annotations

import argparse
import json
import sys
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from mailwarden.errors import InputError

if TYPE_CHECKING:
    from mailwarden.site import Site

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Exit(IntEnum):
    """The exit statuses of every command (the monitoring-plugin convention audit and lint
    already follow; the README's table documents them). One place, so that "unknown address"
    or "bad input" cannot mean a different status in two commands."""

    OK = 0
    """Done, or checked and all good (notes do not count)."""
    FINDINGS = 1
    """Ran, and found something to look at: warnings, an unknown or disabled address, locked
    accounts or held mail."""
    ERROR = 2
    """Critical findings, or could not run: bad site file, unusable input or arguments, a
    server that cannot listen, a directory or store that does not answer."""
    UNKNOWN = 3
    """Ran, but something could not be checked (a check timed out, a log could not be read)."""


CONFIG_DEST = "config"
_REQUIRED = "_config_required"
_COMMAND = "_config_command"


def add_config_option(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    help: str = "the site file (site.toml) to use",
) -> None:
    """``--config/-c FILE`` on a command.

    It is never ``required`` for argparse: argparse would then refuse it after the action
    (``users list --config X``). :func:`share_config_option` copies it onto every action, and
    :func:`check_config_given` enforces ``required`` once all arguments are parsed.
    """
    parser.add_argument("--config", "-c", metavar="FILE", dest=CONFIG_DEST, default=None, help=help)
    parser.set_defaults(**{_REQUIRED: required})


def _has_config(parser: argparse.ArgumentParser) -> bool:
    return any(a.dest == CONFIG_DEST and "--config" in a.option_strings for a in parser._actions)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(dict.fromkeys(action.choices.values()))  # aliases: once each
    return found


def walk(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser below it, depth first (tests walk the real tree with it)."""
    return [parser, *(p for sub in _subparsers(parser) for p in walk(sub))]


def share_config_option(parser: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """Accept ``--config`` before or after the action, in every command and subcommand.

    Every parser below one that has ``--config`` gets the same option with the default
    ``SUPPRESS``: a value given after the action wins, one given before it is kept (argparse
    copies only what the action's own parser set). Parsers also get :class:`HelpFormatter`,
    so that ``add_parser(..., help=...)`` without a formatter still shows defaults.
    """
    parser.formatter_class = HelpFormatter
    if inherited and not _has_config(parser):
        parser.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            dest=CONFIG_DEST,
            default=argparse.SUPPRESS,
            help="the site file (site.toml); also accepted before the action",
        )
    carries = inherited or _has_config(parser)
    if carries:
        parser.set_defaults(**{_COMMAND: parser.prog})  # the deepest one parsed names the error
    for sub in _subparsers(parser):
        share_config_option(sub, inherited=carries)


def check_config_given(args: argparse.Namespace) -> None:
    """argparse's "required" for ``--config``, once, wherever on the line it was given; the
    error is the usual one line (``mailwarden: error [INPUT-INVALID]: users list: ...``)."""
    if getattr(args, _REQUIRED, False) and not getattr(args, CONFIG_DEST, None):
        command = str(getattr(args, _COMMAND, "")).removeprefix("mailwarden ")
        raise InputError(
            f"{command}: --config FILE is required (before or after the action, e.g. "
            f"'mailwarden {command} --config site.toml')"
        )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (they carry examples), and every option's default in its help.

    Like :class:`argparse.ArgumentDefaultsHelpFormatter` without its noise: nothing is added
    when the help already names a default, or when there is none worth saying (``None``, a
    flag's ``False``, an empty list).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or text == argparse.SUPPRESS or "default" in text.lower():
            return text
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (tables, colour on a terminal), json for scripts",
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def formatter() -> type[argparse.RawDescriptionHelpFormatter]:
    return HelpFormatter


def table(*columns: str, title: str | None = None) -> Table:
    """A table for an 80-column terminal: cells wrap at spaces, and a word longer than its
    column (a domain name, an address) folds onto the next line instead of ending in "…"."""
    made = Table(title=title, title_justify="left")
    for column in columns:
        made.add_column(column, overflow="fold", no_wrap=False)
    return made


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 account``, ``2 accounts``, ``0 accounts``; ``plural_form`` for the irregular ones."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count} {word}"


def outlook_2007_note(site: Site) -> str | None:
    """The Outlook 2007 caveat as one line (``serve`` and ``check-config`` print it).

    A set that offers a protocol only with STARTTLS is common (a small institute's server) and
    nothing to act on for most sites: Outlook 2007 is long out of support. So it is one note,
    not a warning per set and protocol on every start. The details stay in check-config's
    JSON (``warnings``) for whoever still has Outlook 2007 users.
    """
    from mailwarden.profiles.outlook import outlook_2007_gaps

    gaps = [f"{name} {kind.upper()}" for name, kind in outlook_2007_gaps(site)]
    if not gaps:
        return None
    return (
        f"Outlook 2007 knows only implicit TLS, so it gets unencrypted settings for: "
        f"{', '.join(gaps)} (add an implicit-TLS server to silence this)"
    )
