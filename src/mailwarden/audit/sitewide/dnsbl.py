"""Site-wide check ``dnsbl``: is an outbound address on a DNS block list (RFC 5782)?

Receivers ask block lists about the connecting address before they read a word; a listed
outbound MTA gets its mail refused or filed as spam at every site using that list, and the
mail team hears of it from users days later. This check asks what receivers ask: for each
``[[audit.outbound]]`` address and each list, ``A`` at the address's reversed octets (IPv4) or
nibbles (IPv6) under the list's zone.

A block list's answer only means something when the list is alive and willing to answer this
resolver. Dead lists are the classic trap: an expired list zone wildcarded by its new owner
"lists" the whole Internet; Spamhaus answers 127.255.255.254 to queries through public
resolvers. So each list first proves itself with its test points (RFC 5782 section 5: the test
point must be listed, 127.0.0.1 must not be), and only answers in 127.0.0.0/8 outside the
list's documented error codes count as listings; anything else is "could not tell" (UNKNOWN),
never "listed" or "clean". The weights of the lists that list an address add up: at
``dnsbl_threshold`` an error, below it a warning. Queries are paced to ``dnsbl_rate`` a second
over the whole check, since public lists throttle and then ban heavy askers.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnstxt import txt_texts
from mailwarden.discovery.mailcaps import shorten
from mailwarden.discovery.resolver import DnsStatus, Resolver, absolute
from mailwarden.findings import Finding, Severity
from mailwarden.server.ratelimit import TokenBuckets
from mailwarden.site.model import DnsblList, OutboundMta

NAME = "dnsbl"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "DNSBL-LISTED": (
        "The outbound address is listed by one or more block lists. Receivers that use "
        "those lists refuse its mail or file it as spam. The weights of the listing lists "
        "add up: at [audit] dnsbl_threshold an error, below it a warning (a note when every "
        "listing list has weight 0). The message quotes each list's answer and TXT text, "
        "which usually names the reason and the delisting page. Stop the cause first (a "
        "compromised account, a hacked web form, forwarded spam), then ask for delisting."
    ),
    "DNSBL-LIST-DEAD": (
        "The block list failed its self-test (RFC 5782 section 5): its test point (127.0.0.2, "
        "::FFFF:7F00:2 for IPv6) is not listed, or 127.0.0.1 is. The list is gone, its zone "
        "has expired (an expired zone may list everything), or it silently ignores this "
        "resolver (Barracuda answers only registered resolvers). Its answers do not count, "
        "so the address is unjudged there. Remove the list from [[audit.dnsbl]], register "
        "the resolver with the list, or audit with --resolver pointing at your own resolver."
    ),
    "DNSBL-REFUSED": (
        "The block list answered with one of its error codes (an [[audit.dnsbl]] errors "
        "network, such as Spamhaus' 127.255.255.254 for queries through public resolvers) "
        "or with an address outside 127.0.0.0/8 (a wildcarded or hijacked zone). The list "
        "refused to answer this resolver, so the address is unjudged there. Audit with "
        "--resolver pointing at your own recursive resolver (not a public one), or use the "
        "list's registered access (e.g. a Spamhaus DQS zone)."
    ),
    "DNSBL-DNS": (
        "A block-list query failed (timeout or SERVFAIL), so whether the list lists the "
        "address could not be told. Lists throttle heavy askers: lower [audit] dnsbl_rate, "
        "check the resolver, and run the audit again."
    ),
    "DNSBL-UNCHECKED": (
        "The address was asked of no block list: it is an IPv6 address and no configured "
        "list answers for IPv6 (ipv6 = true), or [[audit.dnsbl]] is empty. Add a list that "
        "covers it if receivers you care about use one."
    ),
    "DNSBL-NO-OUTBOUND": (
        "The site file names no outbound address, so no block list was asked. The check needs "
        "the addresses the site's mail leaves from: add one [[audit.outbound]] section "
        'with address = "..." for each of them.'
    ),
}

DEFAULT_LISTS: tuple[DnsblList, ...] = (
    DnsblList(zone="zen.spamhaus.org", weight=10, errors=("127.255.255.0/24",)),
    DnsblList(zone="bl.spamcop.net", weight=5),
    DnsblList(zone="b.barracudacentral.org", weight=5),
    DnsblList(zone="bl.mailspike.net", weight=3),
    DnsblList(zone="psbl.surriel.com", weight=2),
)
"""The lists asked when ``[[audit.dnsbl]]`` is not given (docs/audit.md says why these).

Spamhaus ZEN alone reaches the default threshold (10): most large receivers use it, so a
listing there means refused mail. SpamCop and Barracuda together reach it too; Mailspike and
PSBL alone only warn. Spamhaus documents 127.255.255.252-255 as errors (typo, public resolver,
excessive queries), hence its 127.255.255.0/24. All follow RFC 5782's 127.0.0.2 test point.
IPv6 is left off: set ``ipv6 = true`` on a list whose operator documents IPv6 answers.
"""

TEST_POINT_V6 = "::ffff:7f00:2"
"""The IPv6 test point every IPv6 list must list (RFC 5782 section 5)."""
NOT_LISTED_V4 = "127.0.0.1"
NOT_LISTED_V6 = "::ffff:7f00:1"
"""The points no list may list (RFC 5782 section 5): a list that does lists everything."""

MAX_ANSWERS = 16
"""A records of one answer looked at (real lists give one to a few)."""
MAX_TXT_SHOWN = 200
"""Characters of a listing's TXT text quoted in a finding."""

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_FIX_DEAD = "Remove the list from [[audit.dnsbl]], or register this resolver with it"
_FIX_REFUSED = "Audit with --resolver pointing at your own recursive resolver, not a public one"
_FIX_DNS = "Check the resolver, lower [audit] dnsbl_rate and run the audit again"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- the pure core -------------------------------------------------------------------------


def query_name(address: str, zone: str) -> str:
    """``192.0.2.25`` + ``bl.example`` → ``25.2.0.192.bl.example.`` (IPv6: 32 nibbles)."""
    ip = ipaddress.ip_address(address)
    suffix = ".in-addr.arpa" if ip.version == 4 else ".ip6.arpa"
    return ip.reverse_pointer.removesuffix(suffix) + "." + absolute(zone)


class Outcome(Enum):
    LISTED = "listed"
    CLEAR = "clear"
    REFUSED = "refused"
    """The list answered, but with an error code or something that is no listing."""
    FAILED = "failed"
    """No answer: timeout, SERVFAIL."""


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    codes: tuple[str, ...] = ()
    """The answers (listing codes, or the refusing ones)."""
    detail: str = ""


def classify(status: DnsStatus, records: Sequence[str], errors: Iterable[IPNetwork]) -> Verdict:
    """What one ``A`` answer of a list says: listed, clear, refused or failed.

    Only addresses in 127.0.0.0/8 outside ``errors`` are listings (RFC 5782 2.1). One answer
    outside that (a wildcarded zone's web server, Spamhaus' 127.255.255.254) makes the whole
    answer a refusal: a list that answers nonsense once cannot be believed for the rest.
    """
    if status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        return Verdict(Outcome.CLEAR)
    if status is not DnsStatus.OK:
        return Verdict(Outcome.FAILED, detail=status.value)
    if not records:
        return Verdict(Outcome.CLEAR)
    networks = tuple(errors)
    listed: list[str] = []
    refused: list[str] = []
    for record in records[:MAX_ANSWERS]:
        try:
            answer = ipaddress.ip_address(record)
        except ValueError:
            refused.append(shorten(record, 60))
            continue
        if answer.version == 4 and answer in _LOOPBACK and not any(answer in n for n in networks):
            listed.append(str(answer))
        else:
            refused.append(str(answer))
    if refused:
        why = ", ".join(refused)
        return Verdict(Outcome.REFUSED, tuple(refused), f"answered {why}")
    return Verdict(Outcome.LISTED, tuple(listed))


def severity_of(total: int, threshold: int) -> Severity:
    """The weights of the listing lists, added up, against ``dnsbl_threshold``."""
    if total >= threshold:
        return Severity.ERROR
    return Severity.WARNING if total > 0 else Severity.INFO


def error_networks(entry: DnsblList) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entry.errors)


# --- pacing --------------------------------------------------------------------------------


class Pacer:
    """At most ``rate`` queries a second over the whole check, without bursts.

    The bucket is the server's (one concept, one place); this only turns its "no" into a
    wait. The lock keeps the waiters in order, so no query starves.
    """

    def __init__(self, rate: float) -> None:
        self._bucket = TokenBuckets(rate, 1, max_clients=1)
        self._interval = 1.0 / rate
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            while not self._bucket.take("dnsbl", loop.time()):
                await asyncio.sleep(self._interval)


class _Asker:
    """The resolver behind the pacer."""

    def __init__(self, resolver: Resolver, pacer: Pacer) -> None:
        self.resolver = resolver
        self.pacer = pacer

    async def verdict(self, address: str, entry: DnsblList) -> Verdict:
        await self.pacer.wait()
        answer = await self.resolver.query(query_name(address, entry.zone), "A")
        verdict = classify(answer.status, answer.records, error_networks(entry))
        if verdict.outcome is Outcome.FAILED:
            return Verdict(Outcome.FAILED, detail=answer.summary())
        return verdict

    async def reason(self, address: str, entry: DnsblList) -> str:
        """The listing's TXT text (RFC 5782 2.1), bounded; empty when there is none."""
        await self.pacer.wait()
        answer = await self.resolver.query(query_name(address, entry.zone), "TXT")
        if answer.status is not DnsStatus.OK:
            return ""
        return shorten(" / ".join(t for t in txt_texts(answer.records[:4]) if t), MAX_TXT_SHOWN)


# --- a list's self-test --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """Whether a list's answers for one address family count; else the finding to give."""

    code: str = ""
    severity: Severity = Severity.UNKNOWN
    message: str = ""
    fix: str = ""

    @property
    def usable(self) -> bool:
        return not self.code


async def _self_test(asker: _Asker, entry: DnsblList, version: int) -> Health:
    """RFC 5782 section 5: the test point listed, the loopback point not."""
    if version == 4:
        listed_point = entry.test_point if ":" not in entry.test_point else "127.0.0.2"
        clear_point = NOT_LISTED_V4
    else:
        listed_point = entry.test_point if ":" in entry.test_point else TEST_POINT_V6
        clear_point = NOT_LISTED_V6
    positive, negative = await asyncio.gather(
        asker.verdict(listed_point, entry), asker.verdict(clear_point, entry)
    )
    zone = entry.zone
    for point, verdict in ((listed_point, positive), (clear_point, negative)):
        if verdict.outcome is Outcome.REFUSED:
            return Health(
                "DNSBL-REFUSED",
                message=f"{zone} refuses to answer: for its test {point} it {verdict.detail}",
                fix=_FIX_REFUSED,
            )
        if verdict.outcome is Outcome.FAILED:
            return Health(
                "DNSBL-DNS",
                message=f"{zone} could not be asked ({point}: {verdict.detail})",
                fix=_FIX_DNS,
            )
    if positive.outcome is not Outcome.LISTED:
        return Health(
            "DNSBL-LIST-DEAD",
            message=f"{zone} does not list its test point {listed_point}: the list is dead "
            "or ignores this resolver; its answers do not count",
            fix=_FIX_DEAD,
        )
    if negative.outcome is Outcome.LISTED:
        return Health(
            "DNSBL-LIST-DEAD",
            message=f"{zone} lists {clear_point}, which no list may list: it lists "
            "everything; its answers do not count",
            fix=_FIX_DEAD,
        )
    return Health()


# --- the check -----------------------------------------------------------------------------


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


def _asked(entry: DnsblList, version: int) -> bool:
    return version == 4 or entry.ipv6


async def _judge(
    asker: _Asker,
    mta: OutboundMta,
    lists: Sequence[DnsblList],
    health: dict[tuple[str, int], Health],
    threshold: int,
) -> CheckResult:
    address = mta.address
    version = _version(address)
    asked = [entry for entry in lists if _asked(entry, version)]
    if not asked:
        why = "no configured list answers for IPv6" if lists else "no block list is configured"
        finding = Finding(
            Severity.INFO,
            "DNSBL-UNCHECKED",
            address,
            f"{address} was asked of no block list: {why}",
            "Add a list with ipv6 = true to [[audit.dnsbl]]" if lists else "",
        )
        return site_result(NAME, address, [finding], "not checked")
    findings: list[Finding] = []
    usable = [e for e in asked if health[(e.zone, version)].usable]
    for entry in asked:
        state = health[(entry.zone, version)]
        if not state.usable:
            findings.append(Finding(state.severity, state.code, address, state.message, state.fix))
    verdicts = await asyncio.gather(*(asker.verdict(address, e) for e in usable))
    listings: list[tuple[DnsblList, Verdict]] = []
    for entry, verdict in zip(usable, verdicts, strict=True):
        if verdict.outcome is Outcome.LISTED:
            listings.append((entry, verdict))
        elif verdict.outcome is Outcome.REFUSED:
            findings.append(
                Finding(
                    Severity.UNKNOWN,
                    "DNSBL-REFUSED",
                    address,
                    f"{entry.zone} refused to answer about {address}: it {verdict.detail}",
                    _FIX_REFUSED,
                )
            )
        elif verdict.outcome is Outcome.FAILED:
            findings.append(
                Finding(
                    Severity.UNKNOWN,
                    "DNSBL-DNS",
                    address,
                    f"{entry.zone} could not be asked about {address}: {verdict.detail}",
                    _FIX_DNS,
                )
            )
    if listings:
        reasons = await asyncio.gather(*(asker.reason(address, e) for e, _ in listings))
        total = sum(entry.weight for entry, _ in listings)
        parts = []
        for (entry, verdict), reason in zip(listings, reasons, strict=True):
            said = f': "{reason}"' if reason else ""
            parts.append(f"{entry.zone} (weight {entry.weight}, {', '.join(verdict.codes)}){said}")
        findings.insert(
            0,
            Finding(
                severity_of(total, threshold),
                "DNSBL-LISTED",
                address,
                f"{address} is listed by {'; '.join(parts)} — weight {total}, "
                f"threshold {threshold}",
                "Find and stop the cause (the TXT text names the list's page), then ask each "
                "list for delisting",
            ),
        )
    clear = sum(1 for v in verdicts if v.outcome is Outcome.CLEAR)
    detail = f"not listed by {clear} of {len(asked)} lists"
    return site_result(NAME, address, findings, detail)


async def run(context: SiteContext) -> list[CheckResult]:
    audit = context.site.audit
    if not audit.outbound:
        finding = Finding(
            Severity.INFO,
            "DNSBL-NO-OUTBOUND",
            "outbound",
            "no outbound address is configured: the block-list check needs [[audit.outbound]]",
            'Add [[audit.outbound]] with address = "..." for each address mail leaves from',
        )
        return [site_result(NAME, "outbound", [finding])]
    lists = DEFAULT_LISTS if audit.dnsbl is None else audit.dnsbl
    asker = _Asker(context.resolver, Pacer(audit.dnsbl_rate))
    versions = sorted({_version(mta.address) for mta in audit.outbound})
    pairs = [(e, v) for v in versions for e in lists if _asked(e, v)]
    tested = await asyncio.gather(*(_self_test(asker, e, v) for e, v in pairs))
    health = {(e.zone, v): h for (e, v), h in zip(pairs, tested, strict=True)}
    results = await asyncio.gather(
        *(_judge(asker, mta, lists, health, audit.dnsbl_threshold) for mta in audit.outbound)
    )
    return list(results)
