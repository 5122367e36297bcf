"""``mailwarden directory check``: ask the configured directory about one address, as the
server would (without the cache), and say who answered and how fast."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import make_url

from mailwarden.address import AddressError, parse_address
from mailwarden.cli.common import (
    add_config_option,
    add_format_option,
    console,
    formatter,
    print_json,
)
from mailwarden.directory.base import Account
from mailwarden.directory.config import DirectoryConfig, LdapConfig, SqlConfig
from mailwarden.directory.factory import open_backend
from mailwarden.errors import InputError
from mailwarden.site import load_site

HELP = """\
Connect to the directory named in the site file ([directory]), bind, look one address up
exactly as the server does (same filter or query, same escaping, no cache) and print the
account, the server that answered and the time it took.

  mailwarden directory -c /etc/mailwarden/site.toml check jane.doe@example.edu
  mailwarden directory -c site.toml check alias@example.edu --format json

Exit status (for monitoring): 0 the address is known and enabled, 1 unknown or disabled,
2 the directory could not answer. Errors are one line with a stable code:
DIRECTORY-AUTH (bind refused), DIRECTORY-UNREACHABLE (no server answered), DIRECTORY-TLS
(certificate not trusted or wrong host), DIRECTORY-FILTER (the server refused the filter),
DIRECTORY-ERROR (anything else, e.g. an SQL error), CONFIG-INVALID (site file).
"""


@dataclass(frozen=True)
class CheckResult:
    address: str
    backend: str
    server: str
    seconds: float
    matches: int
    account: dict[str, Any] | None
    query: str


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "directory",
        help="check the user directory (LDAP, SQL or embedded)",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="look one address up and show the answer, the server and the timing",
        description=HELP,
        formatter_class=formatter(),
    )
    check.add_argument("address", help="the address (or alias) to look up")
    add_format_option(check)
    check.set_defaults(func=run_check)


def _server_label(config: DirectoryConfig) -> str:
    if isinstance(config, LdapConfig):
        return ", ".join(config.servers)
    if isinstance(config, SqlConfig):
        return make_url(config.url).render_as_string(hide_password=True)
    return str(config.path)


async def check(config: DirectoryConfig, text: str) -> CheckResult:
    """Look ``text`` up in the bare backend for ``config`` (I/O edge of the command)."""
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise InputError(f"{text!r} is not a valid address: {exc}") from None
    backend = open_backend(config)
    try:
        started = time.perf_counter()
        server = _server_label(config)
        query = ""
        account: Account | None
        if isinstance(config, LdapConfig):
            from mailwarden.directory.ldap import LdapDirectory

            assert isinstance(backend, LdapDirectory)
            entries, trace = await backend.search(address)
            account = backend.account(address, entries)
            server, query, matches = trace.server, trace.filter, trace.matches
        elif isinstance(config, SqlConfig):
            from mailwarden.directory.sql import SqlDirectory

            assert isinstance(backend, SqlDirectory)
            rows = await backend.rows(address)
            account = backend.account(address, rows)
            matches, query = len(rows), config.query
        else:
            account = await backend.lookup(address)
            matches = int(account is not None)
        seconds = time.perf_counter() - started
    finally:
        await backend.close()
    return CheckResult(
        address=address.key,
        backend=config.backend,
        server=server,
        seconds=seconds,
        matches=matches,
        account=asdict(account) if account is not None else None,
        query=query,
    )


def run_check(args: argparse.Namespace) -> int:
    site = load_site(args.config)
    result = asyncio.run(check(site.directory, args.address))
    account = result.account
    status = 0 if account is not None and account["enabled"] else 1
    if args.format == "json":
        print_json({**asdict(result), "status": status})
        return status
    timing = f"{result.seconds * 1000:.1f} ms"
    console.print(f"{result.backend} directory at [bold]{result.server}[/] answered in {timing}")
    if result.query:
        console.print(f"  query: {result.query}", markup=False, soft_wrap=True)
    if account is None:
        why = "more than one entry matches" if result.matches > 1 else "no entry matches"
        console.print(f"[yellow]unknown:[/] {result.address} ({why})", soft_wrap=True)
        return status
    state = "enabled" if account["enabled"] else "[red]disabled[/]"
    console.print(
        f"[green]known:[/] {result.address} → login [bold]{account['login']}[/], "
        f"display name {account['display_name'] or '-'}, {state}",
        soft_wrap=True,
    )
    return status
