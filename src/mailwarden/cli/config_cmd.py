"""``mailwarden check-config``: validate a site file and show what it means."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from mailwarden.address import unicode_domain
from mailwarden.cli.common import (
    add_config_option,
    add_format_option,
    console,
    formatter,
    outlook_2007_note,
    print_json,
    table,
)
from mailwarden.directory.ldap_client import require_site_clients
from mailwarden.errors import ConfigError, InputError
from mailwarden.profiles.outlook import outlook_2007_warnings
from mailwarden.profiles.signing import load_signer
from mailwarden.site import Site, load_site

HELP = """\
Validate a site file and print a summary of the domains and servers it defines.

Every problem is reported as FILE:LINE: KEY.PATH: what is wrong (got VALUE), and the exit
status is 2, so this is safe to run before reloading the server:

  mailwarden check-config /etc/mailwarden/site.toml && systemctl reload mailwarden
  mailwarden check-config --config /etc/mailwarden/site.toml      the same, as other commands

For scripts and monitoring, --format json prints {"valid": true, ...summary} or
{"valid": false, "errors": ["FILE:LINE: KEY: message", ...]} (exit status 0 or 2):

  mailwarden check-config --format json site.toml | jq -r '.errors[]?'
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check-config",
        help="validate a site file and summarise it",
        description=HELP,
        formatter_class=formatter(),
    )
    parser.add_argument(
        "file", metavar="FILE", nargs="?", help="the site file to check (or give --config FILE)"
    )
    add_config_option(parser, required=False, help="the site file to check (instead of FILE)")
    add_format_option(parser)
    parser.set_defaults(func=run)


def summary(site: Site) -> dict[str, Any]:
    return {
        "organisation": site.organisation.name,
        "primary_domain": site.primary_domain,
        "directory": site.directory.backend,
        "domains": {
            name: {
                "aliases": list(d.aliases),
                "services": d.services,
                "login": d.login,
                "unknown_address": d.unknown_address,
                "autodiscover": d.autodiscover,
                "moved_to": d.moved_to,
            }
            for name, d in site.domains.items()
        },
        "services": {
            name: {
                kind: [
                    {"host": s.host, "port": s.port_for(kind), "tls": s.tls, "auth": list(s.auth)}
                    for s in services.servers(kind)
                ]
                for kind in ("imap", "pop3", "smtp")
            }
            for name, services in site.services.items()
        },
        "profiles_signed": site.profiles.signing_certificate is not None,
        "warnings": outlook_2007_warnings(site),
    }


def _load_checked(path: str) -> Site:
    """The site, the signing files it names and the LDAP client if it uses LDAP: ``serve``
    would refuse those too."""
    site = load_site(path)
    load_signer(site.profiles)
    require_site_clients(site)
    return site


def _file(args: argparse.Namespace) -> str:
    """FILE or --config FILE: both spellings are common, and other commands take --config."""
    if args.file and args.config and args.file != args.config:
        raise InputError(f"two site files given ({args.file} and --config {args.config}): give one")
    file: str | None = args.file or args.config
    if not file:
        raise InputError("check-config: give the site file, e.g. 'check-config site.toml'")
    return file


def run(args: argparse.Namespace) -> int:
    args.file = _file(args)
    if args.format == "json":
        # Scripts get JSON on both paths: {"valid": false, "errors": [...]} and exit status 2.
        try:
            site = _load_checked(args.file)
        except ConfigError as exc:
            print_json(
                {
                    "valid": False,
                    "file": args.file,
                    "code": exc.code,
                    "errors": exc.message.splitlines(),
                }
            )
            return exc.exit_status
        print_json({"valid": True, "file": args.file, **summary(site)})
        return 0
    site = _load_checked(args.file)
    data = summary(site)
    console.print(
        f"[green]✓[/] {escape(args.file)} is valid: {escape(site.organisation.name)}",
        soft_wrap=True,
    )
    domains = table(
        "domain", "aliases", "services", "login", "unknown address", "notes", title="Domains"
    )
    for name, d in site.domains.items():
        notes = []
        if d.moved_to:
            notes.append(f"moved to {d.moved_to}")
        if not d.autodiscover:
            notes.append("no Outlook autodiscover")
        if name == site.primary_domain:
            notes.append("primary")
        shown = unicode_domain(name)
        domains.add_row(
            shown,
            ", ".join(unicode_domain(a) for a in d.aliases) or "-",
            escape(d.services),
            d.login,
            d.unknown_address,
            ", ".join(notes) or "-",
        )
    console.print(domains)
    services = table(
        "set", "protocol", "host", "port", "TLS", "auth", title="Servers (in order of preference)"
    )
    for set_name, entry in data["services"].items():
        for kind, servers in entry.items():
            for s in servers:
                services.add_row(
                    escape(set_name),
                    kind,
                    s["host"],
                    str(s["port"]),
                    s["tls"],
                    ", ".join(s["auth"]),
                )
    console.print(services)
    note = outlook_2007_note(site)
    if note:
        console.print(f"[cyan]note:[/] {escape(note)}", soft_wrap=True)
    return 0
