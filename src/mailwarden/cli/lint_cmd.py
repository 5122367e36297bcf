"""``mailwarden lint``: predict what an MTA's dual-stack setup does before a restart does."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from mailwarden.cli.common import add_format_option, console, formatter
from mailwarden.lint.addresses import parse_literal
from mailwarden.lint.errors import LintInputError
from mailwarden.lint.findings import LintReport
from mailwarden.lint.postfix_rules import check_postfix
from mailwarden.lint.report import render_text, to_json
from mailwarden.lint.sendmail import DEFAULT_VERSION, parse_sendmail
from mailwarden.lint.sendmail_rules import check_sendmail
from mailwarden.lint.sniff import refuse_foreign
from mailwarden.lint.system import (
    BINDV6ONLY,
    MAX_CONFIG_BYTES,
    local_addresses,
    make_resolver,
    read_bindv6only,
    read_config,
    read_postfix,
    size_text,
    this_host_name,
)

HELP = """\
Lint the IPv4/IPv6 listening and sending setup of sendmail or Postfix: for every daemon,
client and listener the outcome at start-up is predicted (binds ADDR:PORT, fatal at start-up,
MTA exits after ~50 s or at once, silently disabled, IPv4 refused), then each problem is
explained with the corrected line(s) ready to paste. Codes (S1…, P1…) are explained in docs/lint.md.

Exit status: 0 clean (or only notes), 1 warnings, 2 at least one fatal finding or unusable
input (a file that is empty, binary or not a configuration of this MTA).

Examples:
  mailwarden lint sendmail /etc/mail/sendmail.mc
  mailwarden lint sendmail /etc/mail/sendmail.cf --format json
  mailwarden lint postfix /etc/postfix
"""

SENDMAIL_HELP = """\
Lint a sendmail .mc file (DAEMON_OPTIONS, CLIENT_OPTIONS, FEATURE(`no_default_msa')) or a
generated sendmail.cf (O DaemonPortOptions=…, O ClientPortOptions=…).

Host names in Addr= are resolved as sendmail would, per family. To predict another host,
give its view of the names and its kernel setting:

  mailwarden lint sendmail sendmail.mc
  mailwarden lint sendmail sendmail.mc --hosts prod-hosts.txt --bindv6only 0
  mailwarden lint sendmail sendmail.cf --resolve smtp-out.example.edu=192.0.2.25,2001:db8::25
  mailwarden lint sendmail old.mc --sendmail-version 8.14 --format json
"""

POSTFIX_HELP = """\
Lint a Postfix configuration directory (main.cf and master.cf, with master.cf's -o overrides).

  mailwarden lint postfix /etc/postfix
  mailwarden lint postfix ./postfix-prod --hosts prod-hosts.txt --local-address 192.0.2.25
"""


def _byte_count(text: str) -> int:
    """``--max-bytes``: a positive number of bytes; anything else is a usage error."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return int(text)


def _resolution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hosts",
        metavar="FILE",
        type=Path,
        help="resolve host names only from this hosts-format file (not DNS)",
    )
    parser.add_argument(
        "--resolve",
        metavar="NAME=ADDR[,ADDR]",
        action="append",
        default=[],
        help="answer NAME with these addresses, in this order (repeatable; wins over --hosts)",
    )
    add_format_option(parser)
    parser.add_argument(
        "--max-bytes",
        metavar="N",
        type=_byte_count,
        default=MAX_CONFIG_BYTES,
        help="refuse any configuration or hosts file larger than N bytes, so a wrong path "
        f"(a log, a device) cannot exhaust memory (default: {MAX_CONFIG_BYTES}, "
        f"{size_text(MAX_CONFIG_BYTES)})",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "lint",
        help="predict MTA dual-stack failures (sendmail, Postfix) and print the fix",
        description=HELP,
        formatter_class=formatter(),
    )
    mta = parser.add_subparsers(dest="mta", metavar="MTA", required=True)
    sendmail = mta.add_parser(
        "sendmail",
        help="lint a sendmail .mc or .cf file",
        description=SENDMAIL_HELP,
        formatter_class=formatter(),
    )
    sendmail.add_argument("file", metavar="FILE", type=Path, help="sendmail.mc or sendmail.cf")
    _resolution_options(sendmail)
    sendmail.add_argument(
        "--bindv6only",
        choices=("0", "1"),
        help=f"net.ipv6.bindv6only of the target host (default: read {BINDV6ONLY})",
    )
    sendmail.add_argument(
        "--sendmail-version",
        metavar="X.Y",
        help="sendmail version of the target host (default: the .cf's DZ line, else "
        f"{DEFAULT_VERSION[0]}.{DEFAULT_VERSION[1]})",
    )
    sendmail.set_defaults(func=run_sendmail)
    postfix = mta.add_parser(
        "postfix",
        help="lint a Postfix configuration directory",
        description=POSTFIX_HELP,
        formatter_class=formatter(),
    )
    postfix.add_argument("directory", metavar="DIR", type=Path, help="holds main.cf, master.cf")
    _resolution_options(postfix)
    postfix.add_argument(
        "--local-address",
        metavar="ADDR",
        action="append",
        default=[],
        help="an address the target host has (repeatable; default: this machine's addresses)",
    )
    postfix.add_argument(
        "--myhostname",
        metavar="NAME",
        help="the target's host name when main.cf does not set myhostname (default: this one's)",
    )
    postfix.set_defaults(func=run_postfix)


def _version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)*\s*", text)
    if not match:
        raise LintInputError("--sendmail-version", 0, f"expected X.Y (e.g. 8.17), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _emit(report: LintReport, fmt: str) -> int:
    if fmt == "json":
        console.file.write(to_json(report))
    else:
        render_text(report, console)
    return report.exit_status


def run_sendmail(args: argparse.Namespace) -> int:
    notes: list[str] = []
    path: Path = args.file
    resolver, how = make_resolver(args.hosts, args.resolve, args.max_bytes)
    text = read_config(path, args.max_bytes)
    refuse_foreign(text, str(path))  # empty, binary, a Postfix file: exit 2, not "no findings"
    config = parse_sendmail(text, str(path))
    if args.sendmail_version:
        version = _version(args.sendmail_version)
        notes.append(f"sendmail {version[0]}.{version[1]} (from --sendmail-version)")
    elif config.version is not None:
        version = config.version
        notes.append(f"sendmail {version[0]}.{version[1]} (from the DZ line of {path})")
    else:
        version = DEFAULT_VERSION
        notes.append(
            f"sendmail {version[0]}.{version[1]} assumed; pass --sendmail-version if it differs"
        )
    if args.bindv6only is not None:
        bindv6only = args.bindv6only == "1"
        notes.append(f"net.ipv6.bindv6only={args.bindv6only} (from --bindv6only)")
    else:
        read = read_bindv6only()
        bindv6only = bool(read)
        if read is None:
            notes.append(f"net.ipv6.bindv6only=0 assumed (Linux default): cannot read {BINDV6ONLY}")
        else:
            notes.append(
                f"net.ipv6.bindv6only={int(read)}, read from {BINDV6ONLY} on this machine; "
                "pass --bindv6only to predict another host"
            )
    notes.append(how)
    report = check_sendmail(config, resolver, bindv6only=bindv6only, version=version)
    return _emit(replace(report, notes=tuple(notes)), args.format)


def run_postfix(args: argparse.Namespace) -> int:
    resolver, how = make_resolver(args.hosts, args.resolve, args.max_bytes)
    config = read_postfix(args.directory, args.max_bytes)
    notes = [how]
    if args.local_address:
        local: set[str] = set()
        for value in args.local_address:
            literal = parse_literal(value)
            if literal is None:
                raise LintInputError("--local-address", 0, f"{value!r} is not an IP address")
            local.add(literal.text)
        notes.append("local addresses from --local-address: " + ", ".join(sorted(local)))
    else:
        local = set(local_addresses())
        notes.append(
            "local addresses of this machine: "
            + (", ".join(sorted(local)) or "none found")
            + "; pass --local-address to predict another host"
        )
    if "myhostname" in config.parameters:
        myhostname = config.parameters["myhostname"].value
    else:
        myhostname = args.myhostname or this_host_name()
        source = "--myhostname" if args.myhostname else "this machine"
        notes.append(f"myhostname = {myhostname} (not set in main.cf; from {source})")
    report = check_postfix(config, resolver, local_addresses=local, myhostname=myhostname)
    return _emit(replace(report, notes=tuple(notes)), args.format)
