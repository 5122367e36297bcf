"""One mail log line → one delivery attempt (or nothing): pure, cheap, never raises.

The lines that matter are the SMTP client's results: Postfix ``postfix/smtp[PID]: QID:
to=<…>, relay=HOST[IP]:25, …, status=sent|deferred|bounced (reply)``, the ``host HOST[IP]
said: …`` lines Postfix writes when it moves on to the next MX, and sendmail's ``to=…,
relay=HOST. [IP], dsn=…, stat=Sent|Deferred: …``. Every other line is skipped after one or
two substring tests, which is what makes a scan of millions of lines fast: a regex never runs
on a line that could not matter.

The local outbound address is not in either MTA's log. What the log does have is the syslog
host name and the program tag: Postfix writes ``SYSLOG_NAME/SERVICE`` (``postfix/smtp``,
``postfix-out2/smtp``, ``postfix/smtp-ip2``), and sites that send from several addresses do so
with one transport or one instance per ``smtp_bind_address``, which gives each its own tag. So
the outbound key is ``HOST TAG``; ``--outbound TAG=ADDRESS`` names it.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple

MAX_LINE = 16_384
"""Characters of one line looked at; longer lines (none that Postfix writes) are cut."""
MAX_REPLY = 2_000
"""Characters of a remote reply kept (Postfix's own limit is similar)."""

MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
FUTURE_SLACK = 7 * 86400.0
"""A classic timestamp more than this after the reference time is from the year before (a
December line read in January)."""

SKIP_PROGRAMS = frozenset(
    {"local", "virtual", "lmtp", "pipe", "error", "retry", "discard", "qmgr", "bounce"}
)
"""Postfix delivery agents that never talk to a remote SMTP server."""
SKIP_MAILERS = (" mailer=local,", " mailer=prog,", " mailer=*file*,", " mailer=*include*,")


class Attempt(NamedTuple):
    """What one log line says about one delivery attempt to a remote server."""

    ts: float
    """Seconds since the epoch."""
    outbound: str
    """``HOST TAG`` of the sending MTA (see the module docstring)."""
    relay_host: str
    """Remote host name as logged, "" for relay=none."""
    relay_ip: str
    domain: str
    """Recipient domain (first recipient), lower case, only when no relay host is logged (it
    then names the provider); "" otherwise."""
    status: str
    """``sent``, ``deferred``, ``bounced``, or ``reply`` (an answer from a server that was
    not the last one tried: it counts for signatures, not as a delivery result)."""
    reply: str
    """The remote server's answer as logged ("" for sent mail)."""


class Clock:
    """Turns log timestamps into epoch seconds.

    Classic syslog stamps (``Mar  4 10:00:01``, Postfix's own ``maillog_file`` adds
    ``.123456``) have no year and no zone: the year is the reference time's, or the one before
    when that would put the line more than a week in the future; the zone is ``tz`` (default:
    the local zone, as syslog wrote it). RFC 3339 stamps (rsyslog, journald ``short-iso``) carry
    both. Results are cached per hour, so the common case is a dict lookup and two ints.
    """

    def __init__(self, reference: float | None = None, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self._hours: dict[str, float | None] = {}
        self._stamps: dict[str, float | None] = {}
        self.year = 0
        self.reference = 0.0
        self.set_reference(time.time() if reference is None else reference)

    def set_reference(self, reference: float) -> None:
        """Move "now" (``--follow`` does, every poll); the cache goes when the year turns."""
        self.reference = reference
        if self.tz is not None:
            year = datetime.fromtimestamp(reference, self.tz).year
        else:
            year = time.localtime(reference).tm_year
        if year != self.year:
            self._hours.clear()
            self._stamps.clear()
        self.year = year

    def _hour(self, month: int, day: int, hour: int) -> float | None:
        for year in (self.year, self.year - 1):
            try:
                if self.tz is None:
                    datetime(year, month, day, hour)  # validates the date
                    base = time.mktime((year, month, day, hour, 0, 0, 0, 0, -1))
                else:
                    base = datetime(year, month, day, hour, tzinfo=self.tz).timestamp()
            except (ValueError, OverflowError):
                continue  # Feb 29 of a year without one: try the year before
            if base <= self.reference + FUTURE_SLACK:
                return base
        return None

    def classic(self, stamp: str) -> float | None:
        """``Mon DD HH:MM:SS`` (15 characters, day space-padded) → epoch, or None."""
        # Busy logs write many lines per second: the whole stamp is cached too.
        seen = self._stamps.get(stamp, -1.0)
        if seen != -1.0:
            return seen
        if len(self._stamps) > 4096:
            self._stamps.clear()
        result = self._stamps[stamp] = self._classic(stamp)
        return result

    def _classic(self, stamp: str) -> float | None:
        key = stamp[:9]
        base = self._hours.get(key, -1.0)
        if base == -1.0:
            base = None
            month = MONTHS.get(stamp[:3])
            day, hour = stamp[4:6].strip(), stamp[7:9]
            if month and day.isdigit() and hour.isdigit() and stamp[3] == " ":
                base = self._hour(month, int(day), int(hour))
            if len(self._hours) > 10_000:
                self._hours.clear()
            self._hours[key] = base
        if base is None:
            return None
        mm, ss = stamp[10:12], stamp[13:15]
        if not (mm.isdigit() and ss.isdigit() and stamp[9] == ":" and stamp[12] == ":"):
            return None
        minutes, seconds = int(mm), int(ss)
        if minutes > 59 or seconds > 60:
            return None
        return base + minutes * 60 + seconds

    @staticmethod
    def iso(stamp: str) -> float | None:
        """RFC 3339 (``2024-03-14T10:00:01.5+01:00``, ``…Z``, ``…+0100``) → epoch, or None.
        A stamp without a zone is taken as UTC."""
        if len(stamp) > 40:
            return None
        try:
            when = datetime.fromisoformat(stamp)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.timestamp()
        except (ValueError, OverflowError):
            return None


def format_classic(ts: float, tz: tzinfo | None = None) -> str:
    """The classic syslog stamp of ``ts`` (the inverse of :meth:`Clock.classic`)."""
    when = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)
    return f"{calendar.month_abbr[when.month]} {when.day:>2} {when:%H:%M:%S}"


def _reply(text: str) -> str:
    """The remote answer inside Postfix's explanation: after ``said:`` / ``refused to talk to
    me:``, without the ``(in reply to … command)`` trailer."""
    for marker in (" said: ", " refused to talk to me: "):
        i = text.find(marker)
        if i >= 0:
            text = text[i + len(marker) :]
            break
    j = text.rfind(" (in reply to ")
    if j >= 0:
        text = text[:j]
    return text[:MAX_REPLY]


def _host_ip(text: str) -> tuple[str, str]:
    """``HOST[IP]:PORT`` (Postfix) or ``HOST. [IP]`` (sendmail) → (host, ip)."""
    i = text.find("[")
    if i < 0:
        return text.strip().rstrip("."), ""
    j = text.find("]", i)
    ip = text[i + 1 : j] if j > i else ""
    return text[:i].strip().rstrip("."), ip


def _domain(msg: str) -> str:
    i = msg.find("to=")
    if i < 0:
        return ""
    end = msg.find(",", i)
    rcpt = msg[i + 3 : end if end > 0 else i + 300]
    at = rcpt.rfind("@")
    return rcpt[at + 1 :].strip("<> ").lower() if at >= 0 else ""


def parse_line(line: str, clock: Clock) -> Attempt | None:
    """The delivery attempt ``line`` records, or None (not a delivery line, or unreadable)."""
    if "status=" in line:
        postfix = True
    elif "stat=" in line:
        postfix = False
    elif " said: " in line or " refused to talk to me: " in line:
        postfix = True
    else:
        return None
    try:
        return _parse(line[:MAX_LINE], clock, postfix)
    except (
        ValueError,
        IndexError,
        OverflowError,
    ):  # belt and braces: a strange line is skipped, not fatal
        return None


def _parse(line: str, clock: Clock, postfix: bool) -> Attempt | None:
    # --- header: TIMESTAMP HOST TAG[PID]: MESSAGE
    if line[:1].isdigit():
        sp = line.find(" ")
        if sp < 0:
            return None
        ts = clock.iso(line[:sp])
    else:
        ts = clock.classic(line[:15])
        sp = line.find(" ", 15)
    if ts is None or sp < 0:
        return None
    hsp = line.find(" ", sp + 1)
    colon = line.find(": ", hsp + 1)
    if hsp < 0 or colon < 0:
        return None
    tag = line[hsp + 1 : colon]
    br = tag.find("[")
    if br >= 0:
        tag = tag[:br]
    if " " in tag:
        return None
    msg = line[colon + 2 :]
    outbound = f"{line[sp + 1 : hsp]} {tag}"
    if postfix:
        if tag.rpartition("/")[2] in SKIP_PROGRAMS:
            return None
        st = msg.find(" status=")
        if st >= 0:
            end = msg.find(" ", st + 8)
            status = msg[st + 8 : end] if end > 0 else msg[st + 8 :]
            if status not in ("sent", "deferred", "bounced"):
                return None
            r = msg.find(" relay=")
            if r < 0:
                return None
            rend = msg.find(",", r)
            host, ip = _host_ip(msg[r + 7 : rend if rend > 0 else None])
            if host == "none":
                host = ""
            reply = "" if status == "sent" else _reply(msg[end + 2 : -1] if end > 0 else "")
        else:  # a non-final MX answered: "QID: host HOST[IP] said: 421 …"
            h = msg.find("host ")
            if h < 0:
                return None
            hend = msg.find(" ", h + 5)
            host, ip = _host_ip(msg[h + 5 : hend])
            status, reply = "reply", _reply(msg[hend:])
    else:  # sendmail
        if any(m in msg for m in SKIP_MAILERS):
            return None
        st = msg.find("stat=")
        value = msg[st + 5 :]
        if value.startswith("Sent"):
            status, reply = "sent", ""
        elif value.startswith("Deferred"):
            status, reply = "deferred", value[10:].strip()[:MAX_REPLY]
        elif "dsn=5." in msg:
            status, reply = "bounced", value[:MAX_REPLY]
        elif "dsn=4." in msg:
            status, reply = "deferred", value[:MAX_REPLY]
        else:
            return None
        r = msg.find("relay=")
        if r < 0:
            host, ip = "", ""
        else:
            rend = msg.find(", ", r)
            host, ip = _host_ip(msg[r + 6 : rend if rend > 0 else None])
    if ip.startswith("127.") or ip == "::1" or ip == "ipv6:::1":
        return None  # a content filter or a local relay, not the Internet
    if host.startswith("private/") or host.startswith("public/"):
        return None
    return Attempt(ts, outbound, host, ip, "" if host else _domain(msg), status, reply)
