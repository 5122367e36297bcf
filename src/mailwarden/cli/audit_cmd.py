"""``mailwarden audit``: TLS, certificates, revocation, dual stack and AUTH on every endpoint."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from mailwarden.audit.report.saved import DEFAULT_KEEP, MAX_KEEP, write_atomically
from mailwarden.cli.common import add_config_option, console, err_console, formatter
from mailwarden.errors import InputError

if TYPE_CHECKING:
    from mailwarden.audit.model import AuditReport

HELP = """\
Audit every endpoint the site depends on: each IMAP/POP3/SMTP server of the site file, the
autoconfig host, the MX hosts of every domain (from DNS) and [[audit.endpoints]], per name x
every A and AAAA address x port. Each is connected to as configured (implicit TLS or STARTTLS,
at most 2 connections per server at a time) and checked:

  handshake    TLS (or STARTTLS) works; busy answers (421, greylisting) are unknown, not broken
  chain        complete and trusted (system store, or [audit] ca_file / --ca-file)
  name         every name that points at the endpoint is in the certificate
  expiry       leaf and intermediates (warning 30 days, critical 14 days; [audit] to change)
  keys         RSA below 2048 bits, SHA-1 signatures
  protocols    TLS 1.0/1.1 still accepted
  revocation   OCSP (signature and freshness verified), else the CRL
  stapling     a must-staple certificate without a staple; HTTPS without stapling (note)
  dualstack    an AAAA address that does not answer, a different certificate per family
  auth         passwords accepted in clear before TLS; the mechanisms after TLS

Then the site as a whole (no connection to the endpoints when only these are chosen):

  spf          every served domain's SPF: syntax, the 10-lookup limit, [[audit.outbound]] permitted
  dkim         the selectors of [audit] dkim_selectors: published, key type and size, t=y
  dmarc        present, policy, rua/ruf and their authorisation (_report._dmarc)
  mta-sts      the TXT record, the policy over HTTPS, its mx patterns against the real MX hosts
  tls-rpt      the _smtp._tls reporting record
  dane         TLSA records of the MX hosts (validating resolver) against the chain they send
  dnsbl        [[audit.outbound]] addresses on block lists (each list proven alive first)
  ptr          reverse DNS of [[audit.outbound]] confirmed forward; HELO and banner names
  antivirus    [audit.antivirus]: clamd answers, knows EICAR, fresh signatures; data folders

Examples:
  mailwarden audit --config /etc/mailwarden/site.toml
  mailwarden audit -c site.toml --only expiry,revocation --format nagios
  mailwarden audit -c site.toml --only spf,dkim,dmarc,dnsbl --resolver 127.0.0.1
  mailwarden audit -c site.toml --format html --output /var/www/audit/index.html
  mailwarden audit -c site.toml --format json --prometheus /var/lib/node_exporter/mailwarden.prom
  mailwarden audit -c site.toml --format nagios --save-dir /var/lib/mailwarden/audit --keep 200

Exit status (the monitoring-plugin convention): 0 all good (or only notes), 1 warnings,
2 critical findings or unusable input, 3 unknown (something could not be checked).
Every finding code is explained in docs/audit.md.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit",
        help="audit TLS, certificates, revocation, dual stack and AUTH on every endpoint",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(parser)
    parser.add_argument(
        "--only",
        metavar="CHECKS",
        help="run only these checks, comma-separated (e.g. expiry,revocation; default: all)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "html", "nagios"),
        default="text",
        help="text for people, json for scripts, html for a browser, nagios for "
        "Nagios/Icinga (short first line, perfdata, exit 0-3); default: text",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        help="write the report to FILE instead of standard output (written whole, then "
        "renamed into place)",
    )
    parser.add_argument(
        "--prometheus",
        metavar="FILE",
        type=Path,
        help="also write metrics for node_exporter's textfile collector to FILE",
    )
    parser.add_argument(
        "--save-dir",
        metavar="DIR",
        type=Path,
        help="also keep this run in DIR: its JSON and HTML report under a name made of its "
        "start time (audit-20260105T060000Z.json/.html), latest.json and latest.html "
        "pointing at them, the oldest runs beyond --keep deleted; the operator console reads "
        "this folder ([console] audit_dir)",
    )
    parser.add_argument(
        "--keep",
        metavar="N",
        type=int,
        default=DEFAULT_KEEP,
        help="runs kept in --save-dir, the oldest deleted (default: %(default)s, "
        "8 days of hourly runs)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        type=Path,
        help="trust only these CA certificates (default: [audit] ca_file, else the system store)",
    )
    parser.add_argument(
        "--resolver",
        metavar="IP[:PORT]",
        help="ask this DNS server for every name (default: the system resolver)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        help="longest one connection may take (default: [audit] timeout, else 10)",
    )
    parser.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=float,
        help="longest the whole audit may take (default: [audit] deadline, else 300)",
    )
    parser.add_argument(
        "--no-legacy",
        action="store_true",
        help="do not try TLS 1.0/1.1 (saves two handshakes per endpoint)",
    )
    parser.set_defaults(func=run)


def _seconds(value: float | None, option: str) -> float | None:
    if value is not None and not 0 < value <= 3600:
        raise InputError(f"{option} {value:g}: give seconds between 0 and 3600")
    return value


@contextlib.contextmanager
def _progress_bar(
    show: bool,
) -> Iterator[tuple[Callable[[], None], Callable[[int], None]]]:
    """A bar on the terminal while endpoints are scanned; otherwise nothing, and rich's
    progress module is not even loaded (a monitoring system runs the audit every few minutes)."""
    if not show:
        yield (lambda: None), (lambda _count: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("endpoints", total=None)
        yield (lambda: bar.advance(task)), (lambda count: bar.update(task, total=count))


def _json_text(report: AuditReport) -> str:
    from mailwarden.audit.report.json import to_json

    return json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"


def _save(folder: Path, report: AuditReport, keep: int) -> None:
    """The run's JSON and HTML report into ``--save-dir``, from this run's one result."""
    from mailwarden.audit.report.html import render_html
    from mailwarden.audit.report.saved import save_run

    save_run(folder, report.started, _json_text(report), render_html(report), keep)


def run(args: argparse.Namespace) -> int:
    from mailwarden.audit.runner import AuditOptions, check_names, run_audit
    from mailwarden.discovery.resolver import Resolver, parse_nameserver
    from mailwarden.site import load_site

    site = load_site(args.config)
    if not 1 <= args.keep <= MAX_KEEP:
        raise InputError(f"--keep {args.keep}: give a number of runs between 1 and {MAX_KEEP}")
    if args.ca_file is not None and not args.ca_file.is_file():
        raise InputError(f"--ca-file {args.ca_file}: no such file")
    options = AuditOptions.from_site(
        site,
        only=check_names(args.only) if args.only else None,
        ca_file=args.ca_file,
        timeout=_seconds(args.timeout, "--timeout"),
        deadline=_seconds(args.deadline, "--deadline"),
        legacy=False if args.no_legacy else None,
    )
    nameserver = parse_nameserver(args.resolver) if args.resolver else None
    resolver = Resolver(nameserver, timeout=min(options.timeout, 5.0))
    show_progress = args.format == "text" and args.output is None and err_console.is_terminal
    with _progress_bar(show_progress) as (advance, set_total):
        report = asyncio.run(
            run_audit(
                site,
                str(args.config),
                resolver,
                options,
                progress=lambda _observation: advance(),
                on_endpoints=set_total,
            )
        )
    # Each renderer is loaded only when used (the HTML one brings jinja2).
    if args.prometheus is not None:
        from mailwarden.audit.report.prometheus import render_prometheus

        write_atomically(args.prometheus, render_prometheus(report))
    if args.save_dir is not None:
        _save(args.save_dir, report, args.keep)
    status = report.exit_status
    if args.format == "json":
        text = _json_text(report)
    elif args.format == "html":
        from mailwarden.audit.report.html import render_html

        text = render_html(report)
    elif args.format == "nagios":
        from mailwarden.audit.report.nagios import render_nagios

        text, status = render_nagios(report)
        text = text if text.endswith("\n") else text + "\n"
    else:
        from mailwarden.audit.report.text import render_text

        if args.output is None:
            render_text(report, console)
            return status
        capture = Console(record=True, width=100, file=io.StringIO())
        render_text(report, capture)
        text = capture.export_text()
    if args.output is not None:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    return status
