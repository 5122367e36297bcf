"""The ``mailwarden`` command: parse arguments, call the package, render the result.

Each subcommand lives in its own module with a ``register(subparsers)`` function; adding a
command means adding a module and one line to :data:`COMMANDS`. Errors reach the user as one line
``mailwarden: error [CODE]: message`` and exit status 2, never as a traceback. Exit statuses
follow one table for all commands (:class:`mailwarden.cli.common.Exit`, the README).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from rich.markup import escape

from mailwarden import __version__
from mailwarden.cli.common import check_config_given, err_console, share_config_option
from mailwarden.errors import MailwardenError

COMMANDS: dict[str, str] = {
    "serve": "serve_cmd",
    "check-config": "config_cmd",
    "users": "users_cmd",
    "directory": "directory_cmd",
    "import-ispdb": "ispdb_cmd",
    "guard": "guard_cmd",
    "console": "console_cmd",
    "lint": "lint_cmd",
    "dns": "dns_cmd",
    "probe": "probe_cmd",
    "audit": "audit_cmd",
    "reputation": "reputation_cmd",
}
"""Command word → the module under ``mailwarden.cli`` that registers it. Only the module of the
command being run is imported (a probe or a lint does not load the server, SQLAlchemy or the
profile signer: about 0.3 s of start-up); ``--help`` and unknown words load them all."""


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"mailwarden.cli.{name}")


def _command_word(argv: Sequence[str]) -> str | None:
    """The command being run: the first argument that is not an option, if it is one."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


DESCRIPTION = """\
mailwarden: the mail team's toolkit.

Everything is driven by one site file (site.toml) that describes your organisation, the mail
domains you serve, their IMAP/POP3/SMTP servers and where user accounts live.

Start here:
  mailwarden check-config site.toml          validate the site file and show what it means
  mailwarden users --config site.toml import users.csv
  mailwarden serve --config site.toml --listen 127.0.0.1:8080 --workers 2
  mailwarden dns records --config site.toml  the DNS records mail clients need
  mailwarden probe jane@example.edu          what Thunderbird and Outlook really get
  mailwarden audit --config site.toml        TLS, certificates, revocation on every endpoint
"""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only its command's module loaded when that is known."""
    parser = argparse.ArgumentParser(
        prog="mailwarden",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'mailwarden COMMAND --help' for the options of one command. "
        "Docs: docs/ in the source tree.",
    )
    parser.add_argument("--version", action="version", version=f"mailwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    word = _command_word(sys.argv[1:] if argv is None else argv)
    for name, module in COMMANDS.items():
        if word is None or name == word:
            _module(module).register(sub)
    share_config_option(parser)  # --config before or after the action, everywhere; defaults shown
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        check_config_given(args)
        status: int = args.func(args)
    except MailwardenError as exc:
        # The message is escaped (it may contain "[domains]") and never wrapped: each problem
        # stays on one line so that scripts and editors can jump to FILE:LINE.
        err_console.print(
            f"[bold red]mailwarden: error[/] {escape(f'[{exc.code}]')}: {escape(exc.message)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status


def entry() -> NoReturn:
    """The ``mailwarden`` command: :func:`main`, then the exit.

    The process ends right after, so the heap is frozen first: the interpreter's last garbage
    collection then skips the tens of thousands of objects an audit or a lint leaves alive
    (30-80 ms on a small machine, paid on every run a monitoring system starts). Not done in
    :func:`main`, which tests and embedders call and then go on.
    """
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry()
