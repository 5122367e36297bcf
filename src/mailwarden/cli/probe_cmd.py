"""``mailwarden probe ADDRESS``: replay what Thunderbird and Outlook do for one address."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from mailwarden.address import AddressError, parse_address
from mailwarden.cli.common import console, formatter
from mailwarden.discovery.context import ProbeContext
from mailwarden.discovery.net import Network, parse_connect_to
from mailwarden.discovery.probe import DEFAULT_DEADLINE, ProbeReport, probe
from mailwarden.discovery.report import probe_json, render_probe
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.errors import InputError

if TYPE_CHECKING:
    from mailwarden.discovery.expected import Expected

HELP = """\
Replay, step by step and with timings, what mail clients do to set up an account for ADDRESS:

  Thunderbird   the four autoconfig URLs of the domain in parallel (HTTPS before HTTP), the
                ISPDB (with --ispdb), the MX host's domain, and Exchange Autodiscover alongside
  Outlook       POST to https://DOMAIN, then https://autodiscover.DOMAIN, then the plain-HTTP
                redirect, then the _autodiscover._tcp SRV record; redirects followed (max 10)
  Autodiscover v2 (JSON), as Outlook mobile, Outlook for Mac and new Outlook use it

Then every IMAP/POP3/SMTP server the clients ended with is connected to exactly as advertised
(implicit TLS or STARTTLS), its certificate checked for the host name, and its AUTH mechanisms
compared with the document (and none in clear text before TLS). With --config, the settings are
compared with what the site file says the address should get (the directory is asked).

Names are resolved through --resolver (default: the system's). --connect-to sends connections
elsewhere while TLS still checks the real name, e.g. to try a new server before DNS points at it.

Examples:
  mailwarden probe jane.doe@example.edu
  mailwarden probe jane.doe@example.edu --config /etc/mailwarden/site.toml --format json
  mailwarden probe a@example.org --resolver 192.0.2.53 --ca-file internal-ca.pem
  mailwarden probe a@example.org --connect-to autoconfig.example.org:443:192.0.2.10:443

Exit status: 0 all good (or only information), 1 warnings, 2 errors or unusable input.
Finding codes (PROBE-…) are explained in docs/discovery.md.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "probe",
        help="replay each mail client's autoconfiguration for one address",
        description=HELP,
        formatter_class=formatter(),
    )
    parser.add_argument("address", metavar="ADDRESS", help="the e-mail address a user types")
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="the site file: compare what each client ends with to what it says the address "
        "should get (its directory is asked for the login name; default: no comparison)",
    )
    parser.add_argument(
        "--resolver",
        metavar="IP[:PORT]",
        help="ask this DNS server for every name (default: the system resolver)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        type=Path,
        help="trust only these CA certificates (default: the system store)",
    )
    parser.add_argument(
        "--client",
        choices=("thunderbird", "outlook", "all"),
        default="all",
        help="which client to replay (outlook includes Autodiscover v2 JSON; default: all)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (tables, colour on a terminal), json for scripts (default: text)",
    )
    parser.add_argument(
        "--connect-to",
        metavar="HOST:PORT:ADDR:PORT",
        action="append",
        default=[],
        help="connect to ADDR:PORT when a client connects to HOST:PORT; an empty part matches "
        "any (HOST, first PORT) or keeps the original (ADDR, last PORT); repeatable",
    )
    parser.add_argument(
        "--ispdb",
        metavar="URL",
        help="base URL of an ISP database to ask as Thunderbird does (default: step skipped)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="longest wait for one step (DNS query, HTTP exchange, server dialogue; default 5)",
    )
    parser.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_DEADLINE,
        help=f"longest the whole probe may take (default {DEFAULT_DEADLINE:g})",
    )
    parser.add_argument(
        "--no-servers",
        action="store_true",
        help="do not connect to the IMAP/POP3/SMTP servers the clients ended with",
    )
    parser.set_defaults(func=run)


def _positive(value: float, option: str) -> float:
    if not 0 < value <= 600:
        raise InputError(f"{option} {value:g}: give seconds between 0 and 600")
    return value


async def _run(args: argparse.Namespace) -> ProbeReport:
    try:
        address = parse_address(args.address)
    except AddressError as exc:
        raise InputError(f"{args.address!r} is not an e-mail address: {exc}") from None
    timeout = _positive(args.timeout, "--timeout")
    deadline = _positive(args.deadline, "--deadline")
    nameserver = parse_nameserver(args.resolver) if args.resolver else None
    rules = [parse_connect_to(text) for text in args.connect_to]
    if args.ispdb is not None and not args.ispdb.startswith(("https://", "http://")):
        raise InputError(f"--ispdb {args.ispdb!r}: give an http:// or https:// URL")
    if args.ca_file is not None and not args.ca_file.is_file():
        raise InputError(f"--ca-file {args.ca_file}: no such file")
    expected: Expected | None = None
    if args.config:  # loads the site model and the directory: only when asked for
        from mailwarden.discovery.expected import expected_settings
        from mailwarden.site import load_site

        expected = await expected_settings(load_site(args.config), address)
    network = Network(
        Resolver(nameserver, timeout=timeout),
        rules,
        connect_timeout=timeout,
        ca_file=args.ca_file,
    )
    network.tls  # noqa: B018 - a bad --ca-file is an input error before anything is sent
    ctx = ProbeContext(network, step_timeout=timeout, ispdb=args.ispdb)
    return await probe(
        ctx,
        address,
        clients=args.client,
        deadline=deadline,
        expected=expected,
        check_servers=not args.no_servers,
    )


def run(args: argparse.Namespace) -> int:
    report = asyncio.run(_run(args))
    if args.format == "json":
        console.file.write(probe_json(report))
    else:
        render_probe(report, console)
    return report.exit_status
