"""``mailwarden console``: the operator console (a separate web listener) and its accounts."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailwarden.cli.common import add_config_option, console, formatter
from mailwarden.errors import ConfigError, InputError

if TYPE_CHECKING:
    from mailwarden.console.config import ConsoleConfig
    from mailwarden.site.model import Site

HELP = """\
The operator console: web pages where the helpdesk looks up an account (directory entry, what
mail programs get, the guard's history), unlocks it and releases its held mail, and admins
lock accounts; with the overview of locks, held mail, the guard's decisions and the last audit.
It listens on its own address, never on the public autoconfig host; put it behind your TLS
proxy on an internal name or SSO (docs/console.md). Configure it in [console].

  mailwarden console --config site.toml                     listen on [console] listen
  mailwarden console --config site.toml --listen 127.0.0.1:8091
  mailwarden console --config site.toml user add alice --role admin
  mailwarden console --config site.toml user list

Exit status: 0 ok; 2 for errors (bad site file, no [console] section, port in use).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "console",
        help="run the operator console (web), manage its local accounts",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help="address to listen on (default: [console] listen, else 127.0.0.1:8091)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="least severe log line written to stderr",
    )
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="console_action", metavar="ACTION", required=False)
    user = actions.add_parser(
        "user",
        help='local console accounts (auth = "local")',
        description="Add, list and remove the local accounts of the console "
        "([console] users_file), with argon2id password hashes.",
        formatter_class=formatter(),
    )
    user_actions = user.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    add = user_actions.add_parser("add", help="add an account or set its password and role")
    add.add_argument("name", help="the login name (letters, digits, ._@+-)")
    add.add_argument(
        "--role",
        choices=("helpdesk", "admin"),
        default="helpdesk",
        help="helpdesk: look up, unlock, release; admin: also lock and see the configuration",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )
    add.set_defaults(func=run_user_add)
    listing = user_actions.add_parser("list", help="list the accounts and their roles")
    listing.set_defaults(func=run_user_list)
    remove = user_actions.add_parser("remove", help="remove an account")
    remove.add_argument("name", help="the login name")
    remove.set_defaults(func=run_user_remove)


def _site_and_console(args: argparse.Namespace) -> tuple[Site, ConsoleConfig, Path]:
    from mailwarden.site import load_site

    site = load_site(args.config)
    base = Path(args.config).resolve().parent
    if site.console is None:
        raise ConfigError(
            f"{args.config}: no [console] section; add one (docs/console.md), e.g. "
            '[console] auth = "local"'
        )
    return site, site.console.resolved(base), base


def _users_file(args: argparse.Namespace) -> Path:
    return _site_and_console(args)[1].users_file


def run_user_add(args: argparse.Namespace) -> int:
    from mailwarden.console.users import check_password, load_users, make_user, save_users

    path = _users_file(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        check_password(password)
        if getpass.getpass("again: ") != password:
            raise InputError("the two passwords differ")
    users = load_users(path)
    users[args.name] = make_user(args.name, args.role, password)
    save_users(path, users)
    console.print(f"[green]✓[/] {args.name} ({args.role}) saved in {path}", highlight=False)
    return 0


def run_user_list(args: argparse.Namespace) -> int:
    from mailwarden.console.users import load_users

    for user in load_users(_users_file(args)).values():
        sys.stdout.write(f"{user.name}\t{user.role}\n")
    return 0


def run_user_remove(args: argparse.Namespace) -> int:
    from mailwarden.console.users import load_users, save_users

    path = _users_file(args)
    users = load_users(path)
    if users.pop(args.name, None) is None:
        raise InputError(f"{args.name}: no such console account in {path}")
    save_users(path, users)
    console.print(f"[green]✓[/] {args.name} removed", highlight=False)
    return 0


def run(args: argparse.Namespace) -> int:
    from mailwarden.cli.listen import bind, run_uvicorn
    from mailwarden.cli.serve_cmd import parse_listen
    from mailwarden.console.app import ConsoleApp
    from mailwarden.console.auth import password_auth
    from mailwarden.console.data import open_backend
    from mailwarden.server.logs import log_config

    site, config, base = _site_and_console(args)
    host, port = parse_listen(args.listen or config.listen)
    auth = password_auth(site, config)  # an unreadable secret or missing LDAP client: now
    backend = open_backend(site, base, config.audit_dir)
    app = ConsoleApp(config, backend, auth)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"console on http://{shown}:{port} (auth {config.auth})", highlight=False)
    return run_uvicorn(
        sock,
        workers=1,  # sessions live in this process
        app=app,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is read by the app, from trusted proxies only
        log_level=args.log_level,
        log_config=log_config(args.log_level),
        lifespan="on",
    )
