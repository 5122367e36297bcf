"""``mailwarden reputation``: are the big providers starting to refuse our mail?"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailwarden.cli.common import (
    add_config_option,
    add_format_option,
    console,
    err_console,
    formatter,
    print_json,
)
from mailwarden.errors import InputError

HELP = """\
Reads Postfix or sendmail logs and counts, per destination provider (Gmail, Microsoft, Yahoo,
GMX, WEB.DE, T-Online, ...) and per outbound MTA, the deliveries, deferrals and bounces, and the
remote answers that mean the provider is slowing down or refusing your mail: rate limits,
block-list answers, citations of public blocklists. Every figure is compared with the period
of the same length before. The answers it knows are in a data file (see `signatures`).

  mailwarden reputation scan /var/log/mail.log                     last 24 h vs the 24 h before
  mailwarden reputation scan /var/log/mail.log.1 /var/log/mail.log --since 6h
  mailwarden reputation scan mail.log.2.gz mail.log.1 mail.log --format json
  mailwarden reputation scan /var/log/mail.log --follow --since 1h -c site.toml
  mailwarden reputation signatures                                 the answers it knows

Exit status (monitoring-plugin style): 0 nothing seen, 1 throttling seen, 2 blocking or a
blocklist seen (in the current period), 3 the log or a signature file could not be read.
Docs: docs/reputation.md.
"""

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STYLE = {"ok": "green", "throttle": "yellow", "block": "bold red"}


class UsageError(InputError):
    """A bad option value (exit status 3: the check could not run)."""

    code = "REPUTATION-USAGE"
    exit_status = 3


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``1h30m``, ``7d``, ``3600`` (seconds) → seconds."""
    text = text.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        parts = DURATION.findall(text)
        if not parts or DURATION.sub("", text).strip():
            raise UsageError(f"{text!r}: expected a duration like 24h, 90m, 1h30m or 7d")
        seconds = sum(float(n) * UNITS[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"{text!r}: the duration must be positive")
    return seconds


def _zone(name: str | None) -> tzinfo | None:
    if name is None:
        return None
    if name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {name!r}: unknown time zone (e.g. UTC, Europe/Berlin)") from None


def _until(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--until {text!r}: expected an RFC 3339 time") from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


def _outbound(pairs: list[str]) -> dict[str, str]:
    names = {}
    for pair in pairs:
        label, sep, address = pair.rpartition("=")
        if not sep or not label.strip() or not address.strip():
            raise UsageError(
                f"--outbound {pair!r}: expected TAG=ADDRESS, e.g. postfix-ip2/smtp=192.0.2.2"
            )
        names[label.strip()] = address.strip()
    return names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "reputation",
        help="rate limits and blocks from the big providers, from the mail log",
        description=HELP,
        formatter_class=formatter(),
    )
    add_config_option(
        parser, required=False, help="site file for --follow's alerts (default: none, stderr)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    scan = actions.add_parser(
        "scan",
        help="count deliveries, deferrals, bounces and reputation answers",
        description=HELP,
        formatter_class=formatter(),
    )
    scan.add_argument(
        "logs",
        nargs="+",
        metavar="MAILLOG",
        type=Path,
        help="mail log files, oldest first (.gz rotated files are read too)",
    )
    scan.add_argument(
        "--since",
        default="24h",
        metavar="DURATION",
        help="length of the current period, compared with the one before "
        "(default 24h); with --follow: the sliding window",
    )
    scan.add_argument(
        "--until", metavar="TIME", help="end of the current period, RFC 3339 (default: now)"
    )
    scan.add_argument(
        "--signatures",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a site's own signature file, tried before the built-in ones",
    )
    scan.add_argument(
        "--outbound",
        action="append",
        default=[],
        metavar="TAG=ADDRESS",
        help="name an outbound MTA: 'postfix-ip2/smtp=192.0.2.2' or "
        "'mx-out1 postfix/smtp=192.0.2.1' (repeat)",
    )
    scan.add_argument(
        "--tz", metavar="ZONE", help="time zone of classic syslog stamps (default: this machine's)"
    )
    add_format_option(scan)
    scan.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep reading the last MAILLOG (like tail -F) and alert on changes",
    )
    scan.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS,  # keeps a --config given before the action
        help="site file whose [guard.alerts] channels get --follow's alerts "
        "(default: alerts go to stderr)",
    )
    scan.add_argument(
        "--cooldown",
        default="1h",
        metavar="DURATION",
        help="--follow: no new alert for a pair at the same level within this",
    )
    scan.add_argument(
        "--min-hits",
        default=1,
        type=int,
        metavar="N",
        help="--follow: answers in the window before a state counts (default 1)",
    )
    scan.add_argument(
        "--poll",
        default=1.0,
        type=float,
        metavar="SECONDS",
        help="--follow: how often the log is read (default 1 s)",
    )
    scan.set_defaults(func=run_scan)

    sigs = actions.add_parser("signatures", help="list the answers and providers it knows")
    sigs.add_argument(
        "--signatures",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="also list a site's own signature file (repeatable)",
    )
    add_format_option(sigs)
    sigs.set_defaults(func=run_signatures)


def run_signatures(args: argparse.Namespace) -> int:
    from mailwarden.reputation.signatures import load_signatures

    sigs = load_signatures(args.signatures)
    if args.format == "json":
        print_json(
            {
                "providers": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "hosts": [h.pattern for h in p.hosts],
                        "domains": sorted(p.domains),
                    }
                    for p in sigs.providers
                ],
                "signatures": [s.as_dict() for s in sigs.signatures],
            }
        )
        return 0
    table = Table(title="Reputation signatures", show_lines=False)
    for col in ("id", "provider", "kind", "meaning"):
        table.add_column(col)
    for s in sigs.signatures:
        table.add_row(s.id, s.provider, s.kind, s.meaning)
    console.print(table)
    return 0


def run_scan(args: argparse.Namespace) -> int:
    from mailwarden.reputation.logline import Clock
    from mailwarden.reputation.signatures import load_signatures
    from mailwarden.reputation.tally import OutboundNames

    # Parsed here, not by argparse: a bad value is exit status 3 (UNKNOWN), not argparse's 2.
    args.since = parse_duration(args.since)
    args.cooldown = parse_duration(args.cooldown)
    sigs = load_signatures(args.signatures)
    names = OutboundNames(_outbound(args.outbound))
    zone = _zone(args.tz)
    if args.follow:
        return _run_follow(args, sigs, names, zone)
    from mailwarden.reputation.scan import scan

    end = _until(args.until)
    report = scan(
        args.logs, sigs, end=end, length=args.since, clock=Clock(end, zone), outbound=names
    )
    if args.format == "json":
        print_json(report)
    else:
        render(report)
    return int(report["exit_status"])


def _cell(cur: int, prev: int) -> str:
    if cur == prev:
        return str(cur)
    arrow = "↑" if cur > prev else "↓"
    return f"{cur} {arrow}{abs(cur - prev)}"


def render(report: dict[str, Any]) -> None:
    """The report as tables: one row per provider, one per outbound address under it."""
    cur, prev = report["current"], report["previous"]
    table = Table(
        title=f"Reputation: {cur['start']} – {cur['end']} (arrows: change from "
        f"{prev['start']} – {prev['end']})",
        title_justify="left",
    )
    for col in (
        "provider / outbound",
        "sent",
        "deferred",
        "bounced",
        "throttle",
        "block",
        "blocklist",
        "state",
    ):
        table.add_column(col, justify="left" if col.startswith("provider") else "right")
    fields = ("sent", "deferred", "bounced", "throttle", "block", "blocklist")
    for p in report["providers"]:
        style = STYLE[p["state"]]
        table.add_row(
            f"[bold]{escape(p['provider'])}[/]",
            *(_cell(p["current"][f], p["previous"][f]) for f in fields),
            f"[{style}]{p['state']}[/]",
        )
        if len(p["outbounds"]) > 1 or p["outbounds"][0]["state"] != "ok":
            for o in p["outbounds"]:
                table.add_row(
                    f"  {escape(o['outbound'])}",
                    *(_cell(o["current"][f], o["previous"][f]) for f in fields),
                    f"[{STYLE[o['state']]}]{o['state']}[/]",
                )
    if not report["providers"]:
        console.print(f"No delivery lines in {', '.join(report['files'])} for this period.")
    else:
        console.print(table)
    if report["signatures"]:
        sig_table = Table(title="Answers seen", title_justify="left")
        for col in ("signature", "kind", "now", "before", "meaning"):
            sig_table.add_column(col, justify="right" if col in ("now", "before") else "left")
        for s in report["signatures"]:
            sig_table.add_row(
                s["id"], s["kind"], str(s["current"]), str(s["previous"]), escape(s["meaning"])
            )
        console.print(sig_table)
        console.print("[bold]What to do[/]")
        for s in report["signatures"]:
            if s["current"]:
                console.print(f"  {s['id']}: {escape(s['advice'])} {s['link']}", soft_wrap=True)
    lines = report["lines"]
    console.print(
        f"{lines['read']} lines read, {lines['attempts']} delivery results in the two periods. "
        f"State: [{STYLE[report['state']]}]{report['state']}[/]"
    )


def _run_follow(args: argparse.Namespace, sigs: Any, names: Any, zone: tzinfo | None) -> int:
    from mailwarden.reputation.follow import follow
    from mailwarden.reputation.logline import Clock
    from mailwarden.reputation.watch import Change, Watch

    alerter = None
    if args.config:
        from mailwarden.guard.actions import Alerter
        from mailwarden.site import load_site

        site = load_site(args.config)
        if site.guard is not None:
            a = site.guard.alerts
            if a.mail_to or a.webhook_url or a.syslog:
                alerter = Alerter(a)
    watch = Watch(
        sigs, window=args.since, cooldown=args.cooldown, min_hits=args.min_hits, outbound=names
    )

    def on_change(change: Change) -> None:
        record = change.record()
        record["at"] = datetime.fromtimestamp(change.at, UTC).isoformat(timespec="seconds")
        if args.format == "json":
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            flag = "ALERT " if change.alert else ""
            hits = ", ".join(f"{k} ×{v}" for k, v in change.signatures.items())
            sys.stdout.write(
                f"{record['at']} {flag}{change.name} / {change.outbound}: {change.previous} → "
                f"{change.state}{' (' + hits + ')' if hits else ''}\n"
            )
        sys.stdout.flush()
        if not change.alert:
            return
        if alerter is None:
            sys.stderr.write(f"{change.subject}\n{json.dumps(record, ensure_ascii=False)}\n")
            sys.stderr.flush()
            return
        for result in asyncio.run(alerter.send(change.subject, record)):
            if not result.ok:
                err_console.print(f"mailwarden: alert failed: {escape(result.detail)}")

    def on_ready() -> None:
        where = "the alert channels of " + args.config if alerter else "stderr"
        if args.format == "json":
            ready = {
                "event": "following",
                "file": str(args.logs[-1]),
                "window_seconds": args.since,
                "alerts": where,
            }
            sys.stdout.write(json.dumps(ready) + "\n")
        else:
            sys.stdout.write(
                f"following {args.logs[-1]} (window {args.since:g} s, alerts to {where})\n"
            )
        sys.stdout.flush()

    follow(
        list(args.logs),
        watch,
        Clock(time.time(), zone),
        on_change=on_change,
        on_ready=on_ready,
        poll=max(0.05, args.poll),
    )
    return 0
