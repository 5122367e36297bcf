"""``mailwarden check-config``: validate a site file and show what it means."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailwarden.address import unicode_domain
from mailwarden.cli.common import add_format_option, console, formatter, print_json
from mailwarden.errors import ConfigError
from mailwarden.profiles.signing import load_signer
from mailwarden.server.app import outlook_2007_warning
from mailwarden.site import Site, load_site

HELP = """\
Validate a site file and print a summary of the domains and servers it defines.

Every problem is reported as FILE:LINE: KEY.PATH: what is wrong (got VALUE), and the exit
status is 2, so this is safe to run before reloading the server:

  mailwarden check-config /etc/mailwarden/site.toml && systemctl reload mailwarden

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
    parser.add_argument("file", metavar="FILE", help="the site file to check")
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
        "warnings": outlook_2007_warning(site),
    }


def _load_checked(path: str) -> Site:
    """The site, and the signing files it names: ``serve`` would refuse a bad key too."""
    site = load_site(path)
    load_signer(site.profiles)
    return site


def run(args: argparse.Namespace) -> int:
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
    domains = Table(title="Domains", title_justify="left")
    for column in ("domain", "aliases", "services", "login", "unknown address", "notes"):
        domains.add_column(column)
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
    services = Table(title="Servers (in order of preference)", title_justify="left")
    for column in ("set", "protocol", "host", "port", "TLS", "auth"):
        services.add_column(column)
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
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    return 0
