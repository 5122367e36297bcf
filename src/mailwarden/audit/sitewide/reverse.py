"""Site-wide check ``ptr``: the outbound addresses' reverse DNS, confirmed forward, and their names.

The large mailbox providers refuse or throttle mail from an address without a PTR record, or
whose PTR name does not resolve back to it (forward-confirmed reverse DNS, FCrDNS): that is
what a hijacked home router looks like. A PTR name that looks like an access line's
(``192-0-2-25.dsl.example.net``, ``dynamic``, ``pool``) scores as spam too. An MTA also names
itself twice, in HELO/EHLO and in its 220 greeting; receivers compare those names with the PTR
and the address, and a mismatch costs reputation. This check looks at all of it for each
``[[audit.outbound]]`` address: the PTR, its forward look-up (A for IPv4, AAAA for IPv6), the
configured ``helo`` and, when ``banner_port`` is set, the greeting the MTA really sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.discovery.mailcaps import ProtocolError, shorten, smtp_is_last_line, smtp_reply
from mailwarden.discovery.net import Network, Unreachable
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus, Resolver, absolute
from mailwarden.findings import Finding, Severity
from mailwarden.site.model import OutboundMta

NAME = "ptr"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "PTR-NONE": (
        "The outbound address has no PTR record. Gmail, Microsoft and most large receivers "
        "refuse or throttle mail from an address without reverse DNS. Ask whoever holds the "
        "address block (the provider, or your network team for your own in-addr.arpa/ip6.arpa "
        "zone) to publish a PTR naming the MTA, e.g. mail.example.org."
    ),
    "PTR-DNS": (
        "A look-up the check needs (the PTR, the PTR name's A/AAAA, or the HELO name's) "
        "failed: timeout or SERVFAIL. Receivers hitting the same failure treat the address as "
        "having no reverse DNS and defer or refuse its mail. Check the reverse zone's name "
        "servers (and the delegation from the address block's holder)."
    ),
    "PTR-MULTIPLE": (
        "The address has more than one PTR record. Receivers use one of them, at random; the "
        "others may not match the HELO name or resolve back, so results vary from delivery to "
        "delivery. Keep exactly one PTR, naming the MTA."
    ),
    "PTR-FORWARD-MISMATCH": (
        "No PTR name of the address resolves back to it (A for IPv4, AAAA for IPv6): the "
        "reverse DNS is not forward-confirmed (FCrDNS). Receivers treat that like a missing "
        "PTR (Postfix's reject_unknown_client_hostname refuses it). Publish an A/AAAA record "
        "for the PTR name with this address, or change the PTR to a name that has one."
    ),
    "PTR-GENERIC": (
        "The PTR name looks generic: it contains the address's digits or a word such as "
        "dynamic, pool, dsl, cable, dhcp or client. Spam filters (and lists such as Spamhaus "
        "PBL) take such names for consumer lines that should not send mail directly. Give the "
        "MTA a PTR naming it as one, e.g. mail.example.org, confirmed by its A/AAAA."
    ),
    "PTR-HELO-MISMATCH": (
        "The configured HELO name is not the address's PTR name, though it resolves to the "
        "address. Most receivers accept this, but some spam filters score a HELO that differs "
        "from the reverse DNS. Make the MTA say its PTR name in HELO/EHLO (Postfix: "
        "smtp_helo_name / myhostname), or make the PTR name the HELO name."
    ),
    "PTR-HELO-FORWARD": (
        "The configured HELO name does not resolve to the outbound address (no A/AAAA, or "
        "other addresses). Receivers with reject_unknown_helo_hostname or similar refuse the "
        "mail, and spam filters score it as forged. Publish an A/AAAA record for the HELO "
        "name with this address, or have the MTA say its PTR name."
    ),
    "PTR-BANNER-MISMATCH": (
        "The name in the MTA's 220 greeting is neither the configured HELO name nor (without "
        "one) the PTR name. Receivers see the greeting only when they connect back, but "
        "callbacks, audits and some reputation services compare it, and a default "
        "(localhost, a container name) hints at a misconfigured host. Set the greeting name "
        "(Postfix: myhostname or smtpd_banner) to the MTA's public name."
    ),
    "PTR-BANNER-UNKNOWN": (
        "The MTA's greeting on banner_port could not be read: the connection failed or timed "
        "out, the server refused this host (a 4xx/5xx greeting) or sent no valid SMTP reply. "
        "Its name could not be compared. Run the audit from a host the MTA accepts "
        "connections from, or unset banner_port."
    ),
    "PTR-NO-OUTBOUND": (
        "The site file names no outbound address, so no reverse DNS was checked. The check "
        "needs the addresses the site's mail leaves from: add one [[audit.outbound]] section "
        'with address = "..." (and helo = "..." for the name the MTA gives) for each of them.'
    ),
}

MAX_PTRS = 8
"""PTR names of one address looked at; more is no real setup."""
MAX_BANNER_LINE = 512
"""Longest greeting line accepted (RFC 5321 4.5.3.1.5: 512 octets with CRLF)."""
MAX_BANNER_LINES = 20
"""Most lines accepted in one multi-line 220 greeting."""
QUIT_GRACE = 2.0
"""Seconds QUIT's reply and the close may take; the greeting is read by then."""

GENERIC_WORDS = frozenset(
    {
        "dynamic",
        "dyn",
        "pool",
        "dsl",
        "adsl",
        "vdsl",
        "xdsl",
        "cable",
        "dhcp",
        "client",
        "clients",
        "dialup",
        "ppp",
        "pppoe",
        "broadband",
    }
)
"""Whole words of a PTR name's host part that name an access line, not a mail server."""

_LETTERS = re.compile(r"[^a-z]+")
_DIGITS = re.compile(r"[0-9]+")


# --- the pure core -------------------------------------------------------------------------


def _host_part(name: str) -> str:
    """The labels in front of the (presumed) registered domain: the last two are left out, as
    the provider's own name (``cable.example``) is no verdict on the host."""
    labels = absolute(name).rstrip(".").split(".")
    return ".".join(labels[:-2] if len(labels) > 2 else labels[:1])


def _contains_run(runs: Sequence[int], wanted: Sequence[int]) -> bool:
    size = len(wanted)
    return any(list(runs[i : i + size]) == list(wanted) for i in range(len(runs) - size + 1))


def generic_reason(name: str, address: str) -> str | None:
    """Why a PTR name looks like an access line's, or None (conservative: a false alarm on a
    real mail server's name costs the team's trust in every other finding)."""
    host = _host_part(name)
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        octets = [int(o) for o in str(ip).split(".")]
        runs = [int(d) for d in _DIGITS.findall(host)[:64]]
        squeezed = re.sub(r"[^0-9a-z]", "", host)
        if (
            _contains_run(runs, octets)
            or _contains_run(runs, octets[::-1])
            or "".join(f"{o:03d}" for o in octets) in squeezed
            or "".join(f"{o:02x}" for o in octets) in squeezed
        ):
            return "it contains the address's digits"
    else:
        squeezed = re.sub(r"[^0-9a-z]", "", host)
        if ip.exploded.replace(":", "") in squeezed or (
            str(ip).replace(":", "-") in host and str(ip).count(":") > 2
        ):
            return "it contains the address's digits"
    words = sorted(set(_LETTERS.split(host)) & GENERIC_WORDS)
    if words:
        return f"it contains {', '.join(repr(w) for w in words)}"
    return None


def resolves_to(answer: DnsAnswer, address: str) -> bool:
    """Whether an A/AAAA answer contains ``address`` (IPv6 compared as addresses, not text)."""
    if answer.status is not DnsStatus.OK:
        return False
    wanted = ipaddress.ip_address(address)
    for record in answer.records:
        try:
            if ipaddress.ip_address(record) == wanted:
                return True
        except ValueError:
            continue
    return False


def banner_name(lines: Sequence[bytes]) -> tuple[int, str]:
    """The code and the name of a greeting (``220 mx.example.org ESMTP``), lower case, with a
    trailing dot; raises :class:`ProtocolError` for anything that is no SMTP reply. The name
    is empty when the greeting names nothing."""
    code, texts = smtp_reply(lines)
    words = texts[0].split()
    name = words[0].lower() if words else ""
    if name and not name.startswith("["):
        name = absolute(name)
    return code, shorten(name, 255)


# --- the wire ------------------------------------------------------------------------------


async def _line(reader: asyncio.StreamReader, buffer: bytearray) -> bytes:
    while True:
        end = buffer.find(b"\n", 0, MAX_BANNER_LINE)
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            return line
        if len(buffer) >= MAX_BANNER_LINE:
            raise ProtocolError(f"a greeting line longer than {MAX_BANNER_LINE} bytes")
        chunk = await reader.read(MAX_BANNER_LINE)
        if not chunk:
            raise ProtocolError("the server closed the connection without a complete reply")
        buffer += chunk


async def _reply(reader: asyncio.StreamReader, buffer: bytearray) -> list[bytes]:
    lines: list[bytes] = []
    for _ in range(MAX_BANNER_LINES):
        line = await _line(reader, buffer)
        lines.append(line)
        if smtp_is_last_line(line):
            return lines
    raise ProtocolError(f"more than {MAX_BANNER_LINES} lines in the greeting")


async def read_greeting(
    network: Network, address: str, port: int, timeout: float
) -> tuple[int, str, str]:
    """Connect, read the 220 greeting, say QUIT; (code, name, first line). Raises
    :class:`Unreachable`, :class:`ProtocolError` or :class:`TimeoutError`."""
    async with asyncio.timeout(timeout):
        connected = await network.open(address, port)
    writer = connected.writer
    try:
        buffer = bytearray()
        async with asyncio.timeout(timeout):
            lines = await _reply(connected.reader, buffer)
        code, name = banner_name(lines)
        first = shorten(lines[0].decode("ascii", errors="replace"), 120)
        try:  # politeness: the greeting is what counts, whatever QUIT gets
            async with asyncio.timeout(QUIT_GRACE):
                writer.write(b"QUIT\r\n")
                await writer.drain()
                await _reply(connected.reader, buffer)
        except (OSError, TimeoutError, ProtocolError):
            pass
        return code, name, first
    finally:
        try:
            writer.close()
            async with asyncio.timeout(QUIT_GRACE):
                await writer.wait_closed()
        except Exception:  # closing is best effort: whatever went wrong, the socket goes
            writer.transport.abort()


# --- the check -----------------------------------------------------------------------------


def _show(name: str) -> str:
    return name.rstrip(".")


class _Judge:
    """The findings about one outbound address, gathered step by step."""

    def __init__(self, context: SiteContext, mta: OutboundMta) -> None:
        self.context = context
        self.resolver: Resolver = context.resolver
        self.mta = mta
        self.address = mta.address
        self.rdtype = "A" if ipaddress.ip_address(mta.address).version == 4 else "AAAA"
        self.findings: list[Finding] = []
        self.notes: list[str] = []

    def report(self, severity: Severity, code: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(severity, code, self.address, message, fix))

    async def ptr_names(self) -> tuple[str, ...]:
        reverse = ipaddress.ip_address(self.address).reverse_pointer
        answer = await self.resolver.query(reverse, "PTR")
        if answer.status.failed:
            self.report(
                Severity.UNKNOWN, "PTR-DNS", f"PTR look-up of {reverse}: {answer.summary()}"
            )
            return ()
        if answer.status is not DnsStatus.OK or not answer.records:
            self.report(
                Severity.ERROR,
                "PTR-NONE",
                f"{self.address} has no PTR record ({answer.summary()})",
                f"Publish a PTR record at {reverse} naming the MTA",
            )
            return ()
        names = tuple(absolute(r) for r in answer.records[:MAX_PTRS])
        if len(answer.records) > 1:
            self.report(
                Severity.WARNING,
                "PTR-MULTIPLE",
                f"{self.address} has {len(answer.records)} PTR records: "
                + ", ".join(_show(n) for n in names),
                "Keep exactly one PTR record",
            )
        return names

    async def confirmed(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The PTR names that resolve back to the address (FCrDNS)."""
        answers = await asyncio.gather(*(self.resolver.query(n, self.rdtype) for n in names))
        good = tuple(n for n, a in zip(names, answers, strict=True) if resolves_to(a, self.address))
        if good:
            return good
        said = shorten(
            "; ".join(
                f"{_show(n)} {self.rdtype}: {a.summary()}"
                for n, a in zip(names, answers, strict=True)
            ),
            400,
        )
        if all(a.status.failed for a in answers):
            self.report(Severity.UNKNOWN, "PTR-DNS", said)
            return ()
        self.report(
            Severity.ERROR,
            "PTR-FORWARD-MISMATCH",
            f"no PTR name of {self.address} resolves back to it ({said})",
            f"Publish {self.rdtype} {self.address} for {_show(names[0])}, or change the PTR",
        )
        return ()

    def generic(self, names: tuple[str, ...]) -> None:
        for name in names:
            why = generic_reason(name, self.address)
            if why:
                self.report(
                    Severity.WARNING,
                    "PTR-GENERIC",
                    f"the PTR name {_show(name)} looks generic: {why}",
                    "Give the MTA a PTR naming it as a mail server (mail.example.org)",
                )

    async def helo(self, names: tuple[str, ...]) -> None:
        helo = self.mta.helo
        if helo is None or absolute(helo) in names:
            return
        answer = await self.resolver.query(helo, self.rdtype)
        if answer.status.failed:
            self.report(
                Severity.UNKNOWN,
                "PTR-DNS",
                f"HELO name {helo} {self.rdtype}: {answer.summary()}",
            )
        elif not resolves_to(answer, self.address):
            self.report(
                Severity.ERROR,
                "PTR-HELO-FORWARD",
                f"the HELO name {helo} does not resolve to {self.address} "
                f"({self.rdtype}: {answer.summary()})",
                f"Publish {self.rdtype} {self.address} for {helo}, or have the MTA say "
                "its PTR name",
            )
        elif names:
            self.report(
                Severity.WARNING,
                "PTR-HELO-MISMATCH",
                f"the HELO name {helo} is not the PTR name "
                f"({', '.join(_show(n) for n in names)}), though it resolves to {self.address}",
                "Make the HELO name and the PTR name the same",
            )

    async def banner(self, names: tuple[str, ...]) -> None:
        port = self.mta.banner_port
        if port is None:
            return
        target = f"[{self.address}]:{port}" if ":" in self.address else f"{self.address}:{port}"
        try:
            code, name, first = await read_greeting(
                self.context.network, self.address, port, self.context.timeout
            )
        except TimeoutError:
            why = f"no complete greeting within {self.context.timeout:g} s"
        except (Unreachable, ProtocolError, OSError) as exc:
            why = (str(exc) or type(exc).__name__).removeprefix(f"{target}: ")
        else:
            if code != 220:
                why = f"the server does not accept this host: {first!r}"
            else:
                self.compare_banner(name, names, target)
                return
        self.report(Severity.UNKNOWN, "PTR-BANNER-UNKNOWN", f"greeting on {target}: {why}")

    def compare_banner(self, name: str, names: tuple[str, ...], target: str) -> None:
        helo = self.mta.helo
        expected = (absolute(helo),) if helo else names
        self.notes.append(f"greeting {_show(name) or '(no name)'}")
        if not expected or name in expected:
            return
        what = "HELO name" if helo else "PTR name"
        self.report(
            Severity.WARNING,
            "PTR-BANNER-MISMATCH",
            f"{target} greets as {_show(name) or '(no name)'!s}, not as its {what} "
            + ", ".join(_show(n) for n in expected),
            "Set the greeting name (Postfix: myhostname) to the MTA's public name",
        )

    async def run(self) -> CheckResult:
        names = await self.ptr_names()
        good: tuple[str, ...] = ()
        if names:
            good = await self.confirmed(names)
            self.generic(names)
        await self.helo(names)
        await self.banner(names)
        shown = ", ".join(_show(n) for n in (good or names))
        detail = f"PTR {shown}" + (" (forward-confirmed)" if good else "") if names else "no PTR"
        if self.notes:
            detail += "; " + "; ".join(self.notes)
        return site_result(NAME, self.address, self.findings, detail)


async def run(context: SiteContext) -> list[CheckResult]:
    outbound = context.site.audit.outbound
    if not outbound:
        finding = Finding(
            Severity.INFO,
            "PTR-NO-OUTBOUND",
            "outbound",
            "no outbound address is configured: the reverse DNS check needs [[audit.outbound]]",
            'Add [[audit.outbound]] with address = "..." for each address mail leaves from',
        )
        return [site_result(NAME, "outbound", [finding])]
    results = await asyncio.gather(*(_Judge(context, mta).run() for mta in outbound))
    return list(results)
