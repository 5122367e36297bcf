"""``mailwarden dns``: the DNS records mail clients need (``records``), and whether a resolver
answers them (``check``)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

from rich.markup import escape
from rich.table import Table

from mailwarden.cli.common import add_config_option, console, formatter, plural, print_json
from mailwarden.discovery.check import CheckReport, check_published
from mailwarden.discovery.records import MAX_TTL, check_ttl, render_zone, to_json, wanted_records
from mailwarden.discovery.resolver import DEFAULT_TIMEOUT, Resolver, parse_nameserver
from mailwarden.errors import InputError
from mailwarden.findings import Severity
from mailwarden.findings_console import SEVERITY_STYLE
from mailwarden.site import load_site

DEFAULT_TTL = 3600
MAX_TIMEOUT = 60.0

HELP = """\
The DNS records Thunderbird, Outlook and RFC 6186 clients look up for every domain of the site
(autoconfig.<d>, autodiscover.<d>, _autodiscover._tcp.<d>, _imaps._tcp.<d>, ...), written from
the site file, and a check of what a resolver really answers for them.

  mailwarden dns --config site.toml records                  zone-file text to paste
  mailwarden dns records -c site.toml --format json --ttl 300
  mailwarden dns check -c site.toml                          ask the system's resolver
  mailwarden dns check -c site.toml --resolver 192.0.2.53:5353 --format json

--config may stand before or after the action.
"""

RECORDS_HELP = """\
Print the records every served domain and alias domain needs: autoconfig.<d> and
autodiscover.<d> (CNAMEs to [server] public_host, or A/AAAA with [server] public_addresses),
_autodiscover._tcp.<d> (Outlook's one-certificate route), and the RFC 6186/8314 SRV records of
each mail protocol (implicit TLS preferred; '0 0 0 .' for what the domain does not offer).
Names are absolute; each record goes into the zone that holds its name. The header lists the
certificate names the autoconfig host needs for each way of publishing.

  mailwarden dns records -c site.toml > mail-discovery.zone
  mailwarden dns records -c site.toml --format json | jq '.domains[].records[]'
"""

CHECK_HELP = """\
Ask a resolver for every record 'dns records' lists, all queries at once, and report each
difference with a stable code (docs/discovery.md): DNS-MISSING, DNS-DIFFERENT, DNS-CONFLICT,
DNS-SRV-TARGET-CNAME, DNS-SRV-TARGET-NO-ADDRESS, DNS-AUTOCONFIG-ELSEWHERE, DNS-UNAVAILABLE,
DNS-NOT-OFFERED-PUBLISHED, DNS-MOVED-SRV.

Exit status: 0 everything published (or only notes), 1 warnings, 2 errors (a client fails or
reaches the wrong server) or unusable arguments.

  mailwarden dns check -c site.toml
  mailwarden dns check -c site.toml --resolver 127.0.0.1:5353 --timeout 1
  mailwarden dns check -c site.toml --format json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dns",
        help="DNS records for mail client discovery: write them, check them",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    records = actions.add_parser(
        "records",
        help="print the records every domain needs (zone file or JSON)",
        description=RECORDS_HELP,
        formatter_class=formatter(),
    )
    records.add_argument(
        "--format",
        choices=("zone", "json"),
        default="zone",
        help="zone: zone-file text with comments; json: for scripts (default: zone)",
    )
    records.add_argument(
        "--ttl",
        metavar="SECONDS",
        default=str(DEFAULT_TTL),
        help=f"TTL of every record, 0 to {MAX_TTL} (default: {DEFAULT_TTL})",
    )
    records.set_defaults(func=run_records)

    check = actions.add_parser(
        "check",
        help="compare what a resolver answers with the records the site needs",
        description=CHECK_HELP,
        formatter_class=formatter(),
    )
    check.add_argument(
        "--resolver",
        metavar="IP[:PORT]",
        help="ask this name server, e.g. 192.0.2.53, 127.0.0.1:5353 or [2001:db8::53]:53 "
        "(default: the system's resolvers from /etc/resolv.conf)",
    )
    check.add_argument(
        "--timeout",
        metavar="SECONDS",
        default=str(DEFAULT_TIMEOUT),
        help=f"how long each query may take, up to {MAX_TIMEOUT:g} (default: {DEFAULT_TIMEOUT:g})",
    )
    check.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a table for people; json: for scripts and monitoring (default: text)",
    )
    check.set_defaults(func=run_check)


def _ttl(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InputError(
            f"--ttl {text!r}: expected a whole number of seconds (e.g. 3600)"
        ) from None
    return check_ttl(value)


def _timeout(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:
        raise InputError(
            f"--timeout {text!r}: expected seconds, more than 0 and at most {MAX_TIMEOUT:g} "
            "(e.g. 3 or 0.5)"
        )
    return value


def run_records(args: argparse.Namespace) -> int:
    ttl = _ttl(args.ttl)
    blocks = wanted_records(load_site(args.config), ttl=ttl)
    if args.format == "json":
        print_json({"ttl": ttl, **to_json(blocks)})
    else:
        sys.stdout.write(render_zone(blocks))
    return 0


def render_text(report: CheckReport, config: str) -> None:
    """One table row per finding (severity, code, name, message), then a summary line."""
    console.print(
        f"[bold]DNS check[/] of {escape(config)} with {escape(report.resolver)}: "
        f"{report.answers_checked} answers checked",
        soft_wrap=True,
    )
    if not report.findings:
        console.print("[green]✓ every record the site needs is published[/]")
        return
    table = Table(show_lines=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("message", ratio=1)
    for finding in report.findings:
        style = SEVERITY_STYLE[finding.severity]
        message = escape(finding.message)
        if finding.fix:
            message += f" [dim]Fix: {escape(finding.fix)}[/]"
        table.add_row(
            f"[{style}]{finding.severity.value}[/]",
            finding.code,
            escape(finding.subject),
            message,
        )
    console.print(table)
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    console.print(
        f"[bold red]{plural(counts[Severity.ERROR], 'error')}[/], "
        f"[yellow]{plural(counts[Severity.WARNING], 'warning')}[/], "
        f"[cyan]{plural(counts[Severity.INFO], 'note')}[/]; exit status {report.exit_status}"
    )


def run_check(args: argparse.Namespace) -> int:
    nameserver = parse_nameserver(args.resolver) if args.resolver is not None else None
    timeout = _timeout(args.timeout)
    site = load_site(args.config)
    resolver = Resolver(nameserver, timeout=timeout)
    report = asyncio.run(check_published(site, resolver, ttl=DEFAULT_TTL))
    if args.format == "json":
        print_json({"config": str(args.config), **report.to_dict()})
    else:
        render_text(report, str(args.config))
    return report.exit_status
