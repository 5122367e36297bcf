"""Site-wide check ``spf``: each served domain's SPF policy (RFC 7208), as receivers read it.

Two steps. The look-ups (the only I/O, here) load the domain's record and everything it points
to: ``include`` and ``redirect`` targets, the addresses of ``a`` names and of ``mx`` hosts. All
domains of the audit are loaded at once, at most ``dnsquery.MAX_IN_FLIGHT`` queries at a time,
each distinct query once per run (200 domains sharing one university ``include`` ask for it
once) and at most :data:`MAX_QUERIES` per domain. Then the pure functions of :mod:`spfeval`
judge it: the ten-look-up and two-void-look-up limits counted through the whole include tree
(worst case), loops, ``+all``, ``ptr``, and ``check_host()`` for each ``[audit] outbound``
address the way a receiver evaluates it, so "our own MTA fails SPF" is found before users'
mail is junked.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TypeVar

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.authrecords import SpfRecord, trivial_target
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnsquery import BoundedDns
from mailwarden.audit.sitewide.spfeval import (
    MAX_DEPTH,
    MAX_LOOKUPS,
    MAX_MX,
    MAX_VOID,
    Hosts,
    IPAddress,
    MxHosts,
    SpfData,
    Tally,
    check_host,
    effective_all,
    fetched_from,
    tally,
)
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus
from mailwarden.findings import Finding, Severity

NAME = "spf"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "SPF-NONE": (
        "The domain publishes no SPF record (no TXT record beginning v=spf1). Receivers then "
        "cannot tell the site's servers from forgers: mail from the domain is more likely "
        "junked, and Gmail and others require SPF or DKIM from every sender. Publish "
        '"v=spf1 mx -all" (or the outbound addresses with ip4:/ip6:); a domain that sends no '
        'mail publishes "v=spf1 -all".'
    ),
    "SPF-MULTIPLE": (
        "More than one TXT record at the name begins with v=spf1 (at the domain or at a name "
        "it includes). RFC 7208 4.5 makes receivers return permerror: SPF fails for all mail. "
        "Merge them into one record."
    ),
    "SPF-SYNTAX": (
        "The SPF record (or one it includes or redirects to) breaks the syntax: an unknown "
        "mechanism, a bad address or prefix length, a malformed domain or macro, redirect= or "
        "exp= twice. Receivers return permerror for the whole record, so SPF fails for all "
        "mail. Fix the terms the message names."
    ),
    "SPF-INCLUDE-NONE": (
        "An include: (or redirect=) names a domain that publishes no SPF record. RFC 7208 "
        "5.2 makes that a permerror for every message evaluated that far. Remove the term or "
        "correct the name (providers document theirs, e.g. include:_spf.example.net)."
    ),
    "SPF-INCLUDE-LOOP": (
        "An include: or redirect= leads back to a record already on the way. Receivers "
        "evaluating it run into the look-up limit and return permerror. Remove the include "
        "that closes the loop."
    ),
    "SPF-TOO-MANY-LOOKUPS": (
        "Evaluating the record may take more than 10 DNS look-ups (include, a, mx, ptr, "
        "exists and redirect each count, through every include). RFC 7208 4.6.4 makes "
        "receivers stop with permerror at the 11th, so senders listed late in the record fail "
        "SPF. Remove unused includes, replace a and mx by ip4:/ip6: networks, or split the "
        "senders over subdomains."
    ),
    "SPF-TOO-MANY-MX": (
        "An mx mechanism names a domain with more than 10 MX hosts; RFC 7208 4.6.4 makes "
        "that a permerror. List the outbound addresses with ip4:/ip6: instead."
    ),
    "SPF-VOID-LOOKUPS": (
        "More than two of the record's look-ups (a, mx, include, exists targets) find no "
        "record at all (NXDOMAIN or an empty answer). RFC 7208 4.6.4 lets receivers return "
        "permerror after the second such void look-up. Remove the terms naming hosts or "
        "domains that no longer exist."
    ),
    "SPF-PASS-ALL": (
        "The record (or one it includes) ends in +all (or a bare all): every host on the "
        "Internet passes SPF for the domain. That makes SPF worthless and helps forgers pass "
        "DMARC. End the record with -all (or ~all while checking the senders)."
    ),
    "SPF-NEUTRAL-ALL": (
        "The record ends in ?all: hosts not listed get neutral, which receivers treat like no "
        "SPF at all, so forged mail is not told apart. End the record with -all (or ~all)."
    ),
    "SPF-NO-ALL": (
        "The record has neither an all mechanism nor redirect=: unlisted hosts get neutral "
        "(RFC 7208 4.7), as with ?all. State the intent explicitly: end the record with -all "
        "or ~all."
    ),
    "SPF-PTR": (
        "The record uses the ptr mechanism. RFC 7208 5.5 says it SHOULD NOT be used: it is "
        "slow, costs look-ups at the receiver, depends on reverse DNS the site may not "
        "control, and large receivers skip it (so the hosts it was meant to allow fail). "
        "Replace it by ip4:/ip6: networks or a/mx."
    ),
    "SPF-OUTBOUND-NOT-PERMITTED": (
        "An address mail leaves the site from ([audit] outbound) does not pass SPF for the "
        "domain: fail, softfail or permerror (an error: receivers reject or junk the mail and "
        "DMARC fails unless DKIM aligns) or neutral (a warning: no SPF protection). Add the "
        "address to the record (ip4:/ip6:, or a/mx naming its host) or fix the record's "
        "errors. A record that allows nobody (v=spf1 -all: the domain sends no mail) is not "
        "checked."
    ),
    "SPF-OUTBOUND-UNKNOWN": (
        "Whether an outbound address passes SPF could not be told: the policy reaches a term "
        "that depends on the message or the connecting host (exists, ptr, macros) or a "
        "look-up failed before a matching term. Check the address with a real message (the "
        "Received-SPF or Authentication-Results header at a receiver); prefer ip4:/ip6: terms "
        "for the site's own servers."
    ),
    "SPF-LOOKUP-FAILED": (
        "A DNS look-up the record needs failed (timeout, SERVFAIL), or the audit stopped after "
        "its query budget for the domain. Receivers hitting the same failure return temperror "
        "and defer or junk the mail. Check the name servers of the names in the message."
    ),
}

MAX_QUERIES = 250
"""DNS queries one domain's check may cause; 10 mx terms of 10 hosts, A and AAAA each, fit."""


# --- the look-ups ----------------------------------------------------------------------------


class Loader:
    """Loads one domain's policy tree into :class:`SpfData`, within :data:`MAX_QUERIES`."""

    def __init__(self, dns: BoundedDns, budget: int = MAX_QUERIES) -> None:
        self.dns = dns
        self.data = SpfData()
        self.budget = budget
        self.exhausted = False
        self._started: set[tuple[str, str]] = set()

    async def _query(self, name: str, rdtype: str) -> DnsAnswer:
        if self.budget <= 0:
            self.exhausted = True
            return DnsAnswer(name, rdtype, DnsStatus.ERROR, detail="query budget exhausted")
        self.budget -= 1
        return await self.dns.query(name, rdtype)

    def _first(self, kind: str, name: str) -> bool:
        key = (kind, name)
        if key in self._started:
            return False
        self._started.add(key)
        return True

    async def load(self, domain: str, depth: int = 0, sender: str = "") -> None:
        """``domain``'s record and, concurrently, everything its terms name."""
        if depth > MAX_DEPTH or not self._first("spf", domain):
            return
        fetched = fetched_from(await self._query(domain, "TXT"))
        self.data.records[domain] = fetched
        if fetched.record is None:
            return
        record = fetched.record
        jobs = []
        top = sender or domain
        for term in record.mechanisms:
            if not term.lookups or term.name == "ptr":
                continue
            target = trivial_target(term.domain, domain, top)
            if target is None:
                continue
            if term.name == "include":
                jobs.append(self.load(target, depth + 1, top))
            elif term.name == "mx":
                jobs.append(self._mx(target))
            else:
                jobs.append(self._hosts(target))
        if record.redirect is not None:
            target = trivial_target(record.redirect, domain, top)
            if target is not None:
                jobs.append(self.load(target, depth + 1, top))
        await asyncio.gather(*jobs)

    async def _hosts(self, name: str) -> None:
        if not self._first("hosts", name):
            return
        a, aaaa = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"))
        self.data.hosts[name] = Hosts(
            v4=tuple(_addresses(a, ipaddress.IPv4Address)),
            v6=tuple(_addresses(aaaa, ipaddress.IPv6Address)),
            failed4=a.summary() if a.status.failed else "",
            failed6=aaaa.summary() if aaaa.status.failed else "",
        )

    async def _mx(self, name: str) -> None:
        if not self._first("mx", name):
            return
        answer = await self._query(name, "MX")
        if answer.status.failed:
            self.data.mx[name] = MxHosts(failed=answer.summary())
            return
        names: list[str] = []
        for record in answer.records if answer.status is DnsStatus.OK else ():
            _, _, host = record.partition(" ")
            host = host.strip().rstrip(".")
            if host and host not in names:
                names.append(host)
        self.data.mx[name] = MxHosts(tuple(names))
        if len(names) <= MAX_MX:
            await asyncio.gather(*(self._hosts(host) for host in names))


_Address = TypeVar("_Address", ipaddress.IPv4Address, ipaddress.IPv6Address)


def _addresses(answer: DnsAnswer, kind: type[_Address]) -> list[_Address]:
    found: list[_Address] = []
    if answer.status is DnsStatus.OK:
        for record in answer.records:
            try:
                found.append(kind(record))
            except ValueError:
                continue
    return found


# --- the check -------------------------------------------------------------------------------


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per served domain; all domains looked up at once (:class:`BoundedDns`)."""
    dns = BoundedDns(context.resolver)
    outbound = [ipaddress.ip_address(mta.address) for mta in context.site.audit.outbound]
    return list(await asyncio.gather(*(_domain(dns, d, outbound) for d in context.domains)))


async def _domain(dns: BoundedDns, domain: str, outbound: list[IPAddress]) -> CheckResult:
    domain = domain.rstrip(".").lower()
    loader = Loader(dns)
    await loader.load(domain)
    return site_result(NAME, domain, *judge(domain, loader.data, outbound, loader.exhausted))


def judge(
    domain: str, data: SpfData, outbound: list[IPAddress], exhausted: bool = False
) -> tuple[list[Finding], str]:
    """The findings about ``domain``'s loaded policy and the one-line detail."""
    fetched = data.records[domain]
    if fetched.status == "failed":
        return [_finding(Severity.UNKNOWN, "SPF-LOOKUP-FAILED", domain, fetched.detail)], ""
    if fetched.status == "none":
        return [
            Finding(
                Severity.WARNING,
                "SPF-NONE",
                domain,
                f"no SPF record ({fetched.detail})",
                f'publish {domain} TXT "v=spf1 mx -all" (or "v=spf1 -all" if it sends no mail)',
            )
        ], "no SPF record"
    if fetched.status == "multiple":
        return [_finding(Severity.ERROR, "SPF-MULTIPLE", domain, fetched.detail)], ""
    if fetched.record is None:
        return [_finding(Severity.ERROR, "SPF-SYNTAX", domain, fetched.detail)], ""
    record = fetched.record
    found = tally(data, domain)
    findings = _tally_findings(domain, found, exhausted)
    findings += _all_findings(domain, data, found)
    detail = f"{str(record)[:120]}: {found.lookups} of {MAX_LOOKUPS} look-ups"
    checked = _outbound(domain, record, data, outbound)
    findings += checked[0]
    if checked[1]:
        detail += "; " + checked[1]
    return findings, detail


def _finding(severity: Severity, code: str, subject: str, message: str, fix: str = "") -> Finding:
    return Finding(severity, code, subject, message, fix)


def _tally_findings(domain: str, found: Tally, exhausted: bool) -> list[Finding]:
    findings: list[Finding] = []
    for name, fetched in found.broken[:5]:
        code = {"none": "SPF-INCLUDE-NONE", "multiple": "SPF-MULTIPLE"}.get(
            fetched.status, "SPF-SYNTAX"
        )
        findings.append(
            _finding(
                Severity.ERROR,
                code,
                name,
                f"{name} (included by {domain}): {fetched.detail}",
                "fix or remove the include",
            )
        )
    if found.loops:
        findings.append(
            _finding(
                Severity.ERROR,
                "SPF-INCLUDE-LOOP",
                domain,
                "include loop: " + "; ".join(found.loops[:3]),
                "remove the include that leads back",
            )
        )
    if found.lookups > MAX_LOOKUPS:
        at_least = "at least " if found.truncated else ""
        findings.append(
            _finding(
                Severity.ERROR,
                "SPF-TOO-MANY-LOOKUPS",
                domain,
                f"{at_least}{found.lookups} DNS look-ups through includes (limit {MAX_LOOKUPS}): "
                "receivers return permerror at the 11th",
                "remove includes or replace a/mx by ip4:/ip6:",
            )
        )
    if found.many_mx:
        findings.append(
            _finding(Severity.ERROR, "SPF-TOO-MANY-MX", domain, "; ".join(found.many_mx[:3]))
        )
    if len(found.void) > MAX_VOID:
        findings.append(
            _finding(
                Severity.ERROR,
                "SPF-VOID-LOOKUPS",
                domain,
                f"{len(found.void)} look-ups find nothing (limit {MAX_VOID}): "
                + ", ".join(found.void[:6]),
                "remove the terms naming hosts or domains that do not exist",
            )
        )
    if found.ptr:
        where = ", ".join(dict.fromkeys(found.ptr))
        findings.append(
            _finding(
                Severity.WARNING,
                "SPF-PTR",
                domain,
                f"the ptr mechanism is used (in {where})",
                "replace ptr by ip4:/ip6: networks",
            )
        )
    if found.failed or exhausted:
        why = "; ".join(found.failed[:3]) or "query budget exhausted"
        findings.append(_finding(Severity.UNKNOWN, "SPF-LOOKUP-FAILED", domain, why))
    return findings


def _all_findings(domain: str, data: SpfData, found: Tally) -> list[Finding]:
    findings: list[Finding] = []
    if found.pass_all:
        where = ", ".join(dict.fromkeys(found.pass_all))
        findings.append(
            _finding(
                Severity.ERROR,
                "SPF-PASS-ALL",
                domain,
                f"+all (in {where}): every host on the Internet passes SPF",
                "end the record with -all or ~all",
            )
        )
    final, where = effective_all(data, domain)
    if final is not None and final.qualifier == "?":
        findings.append(
            _finding(
                Severity.WARNING,
                "SPF-NEUTRAL-ALL",
                domain,
                f"?all (in {where}): unlisted hosts get neutral",
                "end the record with -all or ~all",
            )
        )
    fetched = data.records.get(where)
    record = fetched.record if fetched is not None else None
    if final is None and record is not None and record.redirect is None:
        findings.append(
            _finding(
                Severity.INFO,
                "SPF-NO-ALL",
                domain,
                f"no all and no redirect (in {where}): unlisted hosts get neutral",
                "end the record with -all or ~all",
            )
        )
    return findings


def _outbound(
    domain: str, record: SpfRecord, data: SpfData, outbound: list[IPAddress]
) -> tuple[list[Finding], str]:
    if not outbound:
        return [], ""
    if record.redirect is None and [str(m) for m in record.mechanisms] == ["-all"]:
        return [], "v=spf1 -all: the domain sends no mail (outbound not checked)"
    findings: list[Finding] = []
    results: list[str] = []
    for ip in outbound:
        verdict = check_host(ip, domain, data)
        results.append(f"{ip} {verdict.result}")
        if verdict.result == "pass":
            continue
        if verdict.result in ("temperror", "unknown"):
            findings.append(
                _finding(
                    Severity.UNKNOWN,
                    "SPF-OUTBOUND-UNKNOWN",
                    domain,
                    f"whether outbound {ip} passes could not be told: {verdict.why}",
                    "check it with a real message; use ip4:/ip6: for the site's own servers",
                )
            )
            continue
        severity = Severity.WARNING if verdict.result in ("neutral", "none") else Severity.ERROR
        findings.append(
            _finding(
                severity,
                "SPF-OUTBOUND-NOT-PERMITTED",
                domain,
                f"outbound {ip} gets {verdict.result}: {verdict.why}",
                f"add ip{ip.version}:{ip} to the record of {domain}",
            )
        )
    return findings, "outbound " + ", ".join(results[:6])
