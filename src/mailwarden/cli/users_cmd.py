"""``mailwarden users``: manage the embedded directory (SQLite)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mailwarden.address import AddressError, parse_address
from mailwarden.cli.common import (
    Exit,
    add_config_option,
    add_format_option,
    console,
    err_console,
    formatter,
    plural,
    print_json,
    table,
)
from mailwarden.directory.embedded import UserRecord, UserStore, scan_users_csv
from mailwarden.errors import ConfigError, InputError
from mailwarden.site import Site, load_site

HELP = """\
Manage the accounts of the embedded directory (the default backend: a SQLite file named by
[directory] path in the site file). Each account has a primary address, a login name (what the
user types as user name in the mail client), an optional display name and any number of alias
addresses; all addresses of an account get that account's login name.

  mailwarden users -c site.toml import users.csv     add/update accounts from CSV, all or nothing
  mailwarden users -c site.toml add jdoe@example.edu --login jdoe --alias john.doe@example.edu
  mailwarden users -c site.toml show john.doe@example.edu
  mailwarden users -c site.toml list --format json

CSV header: address,login[,display_name][,aliases][,enabled] — aliases separated by spaces or
semicolons, enabled yes/no. Every bad row is reported with its line number, and if there is any,
nothing is imported.

--config may stand before or after the action. Exit status: 0 done; 1 the address is not in
the directory (show, remove); 2 bad input, a bad site file or an unusable directory.
"""


IMPORT_HELP = """\
Add or update accounts from a CSV file, in one transaction: every bad row is reported
(FILE:LINE: what is wrong), and if there is any, nothing is imported.

CSV header: address,login[,display_name][,aliases][,enabled]; aliases separated by spaces
or semicolons, enabled yes/no (default yes).

  mailwarden users import users.csv --config site.toml
  mailwarden users import export.csv --replace --config site.toml
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "users",
        help="manage the embedded user directory",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    imp = actions.add_parser(
        "import",
        help="add or update accounts from a CSV file (all or nothing)",
        description=IMPORT_HELP,
    )
    imp.add_argument(
        "csv",
        metavar="FILE.csv",
        help="UTF-8 CSV with the header address,login[,display_name][,aliases][,enabled]",
    )
    imp.add_argument(
        "--replace",
        action="store_true",
        help="remove every account not in the file (make the directory match it)",
    )
    imp.set_defaults(func=run_import)

    add = actions.add_parser("add", help="add one account")
    add.add_argument("address", help="the account's primary address")
    add.add_argument("--login", required=True, help="the login name for IMAP/POP3/SMTP")
    add.add_argument("--name", help="display name (default: none)")
    add.add_argument("--alias", action="append", default=[], help="an alias address (repeatable)")
    add.add_argument("--disabled", action="store_true", help="add the account disabled")
    add.set_defaults(func=run_add)

    remove = actions.add_parser("remove", help="remove the account owning an address")
    remove.add_argument("address", help="the primary address or any alias of the account")
    remove.set_defaults(func=run_remove)

    show = actions.add_parser("show", help="show the account owning an address (or alias)")
    show.add_argument("address", help="the primary address or any alias of the account")
    add_format_option(show)
    show.set_defaults(func=run_show)

    list_ = actions.add_parser("list", help="list all accounts")
    add_format_option(list_)
    list_.set_defaults(func=run_list)


def _store(args: argparse.Namespace) -> UserStore:
    return _site_and_store(args)[1]


def _site_and_store(args: argparse.Namespace) -> tuple[Site, UserStore]:
    site = load_site(args.config)
    if site.directory.backend != "embedded":
        raise ConfigError(
            f"{args.config}: [directory] backend is {site.directory.backend!r}; "
            "'mailwarden users' manages only the embedded directory"
        )
    return site, UserStore(site.directory.path)


def unserved(site: Site, records: list[UserRecord]) -> list[str]:
    """Addresses whose domain the site does not serve: never looked up, usually a typo."""
    return [
        address
        for record in records
        for address in (record.address, *record.aliases)
        if site.domain(address.rpartition("@")[2]) is None
    ]


def _warn_unserved(site: Site, records: list[UserRecord]) -> None:
    addresses = unserved(site, records)
    if addresses:
        shown = ", ".join(addresses[:5]) + (", …" if len(addresses) > 5 else "")
        err_console.print(
            f"[yellow]warning:[/] {plural(len(addresses), 'address', 'addresses')} in domains "
            f"the site does not serve, never looked up: {escape(shown)}",
            soft_wrap=True,
        )


def run_import(args: argparse.Namespace) -> int:
    path = Path(args.csv)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})") from None
    numbered, problems = scan_users_csv(text, str(path))
    site, store = _site_and_store(args)
    try:
        # Bad rows go in too: the good ones are still checked against the directory, so one
        # run lists every problem; then nothing is written.
        count = store.import_records(
            [record for _line, record in numbered],
            source=str(path),
            replace=args.replace,
            lines=[line for line, _record in numbered],
            problems=problems,
        )
        total = store.count()
    finally:
        store.close()
    console.print(
        f"[green]✓[/] imported {plural(count, 'account')} from {escape(str(path))} "
        f"({total} in the directory)",
        soft_wrap=True,
    )
    _warn_unserved(site, [record for _line, record in numbered])
    return 0


def _key(text: str) -> str:
    try:
        return parse_address(text).key
    except AddressError as exc:
        raise InputError(f"{text!r} is not a valid address: {exc}") from None


def run_add(args: argparse.Namespace) -> int:
    record = UserRecord(
        address=_key(args.address),
        login=args.login.strip(),
        display_name=args.name.strip() if args.name else None,
        aliases=tuple(_key(a) for a in args.alias),
        enabled=not args.disabled,
    )
    if not record.login:
        raise InputError("--login must not be empty")
    site, store = _site_and_store(args)
    try:
        store.add(record)
    finally:
        store.close()
    console.print(f"[green]✓[/] added {escape(record.address)} (login {escape(record.login)})")
    _warn_unserved(site, [record])
    return 0


def _unknown(address: str) -> int:
    """An address no account has: a finding (exit 1), as in ``directory check``, not an error."""
    err_console.print(
        f"[yellow]unknown:[/] {escape(address)}: no such address in the directory", soft_wrap=True
    )
    return Exit.FINDINGS


def run_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if store.get(args.address) is None:
            return _unknown(args.address)
        owner = store.remove(args.address)
    finally:
        store.close()
    console.print(f"[green]✓[/] removed the account {escape(owner)} and all its addresses")
    return 0


def _table(records: list[UserRecord]) -> Table:
    shown = table("address", "login", "display name", "aliases", "enabled")
    for r in records:
        shown.add_row(  # values come from CSV files: never let them act as rich markup
            escape(r.address),
            escape(r.login),
            escape(r.display_name or "-"),
            escape(" ".join(r.aliases) or "-"),
            "yes" if r.enabled else "[red]no[/]",
        )
    return shown


def run_show(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record = store.get(args.address)
    finally:
        store.close()
    if record is None:
        return _unknown(args.address)
    if args.format == "json":
        print_json(asdict(record))
    else:
        console.print(_table([record]))
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        records = store.all()
    finally:
        store.close()
    if args.format == "json":
        print_json([asdict(r) for r in records])
    else:
        console.print(_table(records))
        console.print(plural(len(records), "account"))
    return 0
