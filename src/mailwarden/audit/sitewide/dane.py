"""Site-wide check ``dane``: the MX hosts' TLSA records against the chains they really send.

A DANE sender (RFC 7672) validates the MX records and ``_25._tcp.MXHOST`` TLSA with DNSSEC;
when the TLSA answer is secure it delivers only to a server whose chain one of the DANE-TA(2)
or DANE-EE(3) records matches, and otherwise defers the mail. So this check asks the audit's
resolver (only a validating one sets the AD bit this depends on), and compares every record with
what the scanner recorded on port 25 of each MX address: a record that matches no certificate
is mail that waits in senders' queues until it bounces. It runs after the scan
(``AFTER_SCAN``) for that reason.

No TLSA in an unsigned zone gives no finding: DANE needs DNSSEC first, and a note on every
unsigned domain would be noise the DNSSEC decision is not taken on. A signed zone without TLSA
gives a note: there DANE is one record away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mailwarden.audit.model import CheckResult, Observation
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.mtasts import mx_hosts
from mailwarden.audit.sitewide.tlsa import Tlsa, matches, parse_tlsa, unusable_reason
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus
from mailwarden.findings import Finding, Severity

NAME = "dane"
AFTER_SCAN = True

CODES: dict[str, str] = {
    "DANE-NONE": (
        "The MX host's zone is DNSSEC-signed but publishes no TLSA record at _25._tcp.HOST. "
        "DANE is then one record away: with a TLSA 3 1 1 record (the SHA-256 of the server's "
        "public key) DANE senders refuse to deliver to an impostor or without TLS. Publish "
        "one (and a second for the next key, see DANE-ROLLOVER)."
    ),
    "DANE-DNS": (
        "The MX or TLSA look-up failed (timeout or SERVFAIL). A validating resolver also "
        "answers SERVFAIL when DNSSEC validation fails (expired signatures, a DS that matches "
        "no key): then DANE senders defer all mail to this MX. Check the zone's signatures "
        "(e.g. with dig +dnssec, delv or DNSViz) and its name servers."
    ),
    "DANE-UNSIGNED": (
        "TLSA records are published but the answer is not DNSSEC-authenticated (no AD bit): "
        "either the zone is not signed, so senders ignore the records, or the resolver the "
        "audit asked does not validate (give --resolver a validating one, such as a local "
        "Unbound). Sign the zone (and publish its DS in the parent) or remove the records."
    ),
    "DANE-MX-UNSIGNED": (
        "The MX host's TLSA records are authenticated, but the domain's MX records are not. "
        "RFC 7672 2.2.1: a sender cannot trust an MX host name found insecurely, so it does "
        "not use DANE for it. Sign the domain's zone too."
    ),
    "DANE-USAGE": (
        "A TLSA record has usage 0 (PKIX-TA) or 1 (PKIX-EE). RFC 7672 3.1.3 makes these "
        "unusable for SMTP: senders ignore them (and with only such records, authenticate "
        "nothing). Publish usage 3 (DANE-EE, the server's key) or 2 (DANE-TA, the issuing "
        "CA's key) instead."
    ),
    "DANE-INVALID": (
        "A TLSA record cannot be read or uses an undefined selector or matching type, or its "
        "digest has the wrong length for its type. Senders ignore it. Regenerate it (e.g. "
        "with ldns-dane, hash-slinger or openssl) as 3 1 1 HEX-OF-SHA256."
    ),
    "DANE-MISMATCH": (
        "No usable TLSA record matches the certificate chain this MX address presented. DANE "
        "senders will not deliver to it: mail waits in their queues and then bounces. The "
        "usual cause is a renewed key without the TLSA record updated first. Publish a "
        "record for the current key (3 1 1 of its public key), or serve the key the record "
        "names. When the zone is not signed, a warning (senders ignore the records today)."
    ),
    "DANE-ROLLOVER": (
        "Every TLSA record of the MX host designates the same one certificate (often: a "
        "single 3 1 1 record). The next key change breaks DANE delivery unless a record for "
        "the new key is published a few TTLs before it is used. Keep two records: the current "
        "key and the next (or a 2 1 1 for the issuing CA beside the 3 1 1)."
    ),
    "DANE-NOT-SCANNED": (
        "TLSA records exist but the audit has no chain from this MX host to compare them with: "
        "the MX was not scanned (e.g. [audit] mx = false, or an --only without it) or the "
        "connection to port 25 failed. Whether DANE senders deliver could not be told; "
        "enable the MX scan or fix the connection."
    ),
}


@dataclass
class _Host:
    """One MX host and what relies on it."""

    name: str
    domains: list[str] = field(default_factory=list)
    insecure_mx: list[str] = field(default_factory=list)
    """Domains whose MX answer was not authenticated."""


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per MX host (shared hosts once), plus one per domain whose MX look-up failed.

    A domain without MX records is left out, as the scan leaves it out: its implicit MX (the
    domain's own address) is rarely a mail server anyone configured for DANE."""
    answers = await asyncio.gather(*(context.resolver.query(d, "MX") for d in context.domains))
    results: list[CheckResult] = []
    hosts: dict[str, _Host] = {}
    for domain, answer in zip(context.domains, answers, strict=True):
        if answer.status.failed:
            results.append(site_result(NAME, domain, [_dns_failure(domain, answer)]))
            continue
        for name in mx_hosts(answer, domain, implicit=False):
            host = hosts.setdefault(name, _Host(name))
            host.domains.append(domain)
            if not answer.authenticated:
                host.insecure_mx.append(domain)
    checked = await asyncio.gather(*(_host(context, host) for host in hosts.values()))
    return results + list(checked)


def _dns_failure(name: str, answer: DnsAnswer) -> Finding:
    return Finding(
        Severity.UNKNOWN,
        "DANE-DNS",
        name,
        f"{answer.rdtype} look-up failed: {answer.summary()} (a validating resolver also "
        "answers SERVFAIL when DNSSEC validation fails)",
        "check the zone's DNSSEC signatures and name servers",
    )


async def _host(context: SiteContext, host: _Host) -> CheckResult:
    name = f"_25._tcp.{host.name}"
    answer = await context.resolver.query(name, "TLSA")
    role = "MX of " + ", ".join(host.domains[:5])
    if answer.status.failed:
        return site_result(NAME, host.name, [_dns_failure(name, answer)])
    if answer.status is not DnsStatus.OK:
        if await _signed(context, host.name, answer):
            finding = Finding(
                Severity.INFO,
                "DANE-NONE",
                name,
                "the zone is DNSSEC-signed but has no TLSA record for this MX",
                f"publish {name} TLSA 3 1 1 <SHA-256 of the server's public key>",
            )
            return site_result(NAME, host.name, [finding], f"{role}: no TLSA")
        return site_result(
            NAME,
            host.name,
            (),
            f"{role}: no TLSA (zone not signed, or the resolver does not validate)",
        )
    findings: list[Finding] = []
    usable: list[Tlsa] = []
    for record in answer.records[:32]:
        parsed = parse_tlsa(record)
        if isinstance(parsed, str):
            findings.append(_invalid(name, parsed))
            continue
        reason = unusable_reason(parsed)
        if reason is None:
            usable.append(parsed)
        elif parsed.usage in (0, 1):
            findings.append(
                Finding(
                    Severity.WARNING,
                    "DANE-USAGE",
                    name,
                    f"{parsed.text()}: {reason}",
                    "publish usage 3 (DANE-EE) or 2 (DANE-TA) records",
                )
            )
        else:
            findings.append(_invalid(name, f"{parsed.text()}: {reason}"))
    secure = answer.authenticated
    if not secure:
        findings.append(
            Finding(
                Severity.WARNING,
                "DANE-UNSIGNED",
                name,
                "TLSA records are published but the answer is not DNSSEC-authenticated: the "
                "zone is not signed (senders ignore the records) or the resolver asked does "
                "not validate",
                "sign the zone, or audit with a validating --resolver",
            )
        )
    elif host.insecure_mx:
        findings.append(
            Finding(
                Severity.WARNING,
                "DANE-MX-UNSIGNED",
                host.name,
                f"the MX records of {', '.join(host.insecure_mx[:5])} are not authenticated: "
                "senders do not use DANE for an MX found insecurely (RFC 7672 2.2.1)",
                "sign the domain's zone",
            )
        )
    if not usable:
        return site_result(NAME, host.name, findings)
    observed = _observations(context, host.name)
    chains = [o for o in observed if o.chain]
    if not chains:
        why = (
            "port 25 was not scanned (MX scan off, or not chosen)"
            if not observed
            else "no certificate was read: "
            + "; ".join(f"{o.endpoint.address}: {o.error or 'no chain'}" for o in observed[:4])
        )
        findings.append(
            Finding(
                Severity.UNKNOWN,
                "DANE-NOT-SCANNED",
                host.name,
                f"{len(usable)} usable TLSA record(s), but nothing to compare them with: {why}",
                "scan the MX hosts ([audit] mx = true) from a host that reaches port 25",
            )
        )
        return site_result(NAME, host.name, findings)
    findings += _compare(name, host.name, usable, chains, secure)
    matched = sorted({t.text() for t in usable if any(matches(t, o.chain) for o in chains)})
    detail = f"{role}: TLSA {', '.join(matched[:3]) or 'none'} match"
    return site_result(NAME, host.name, findings, detail)


async def _signed(context: SiteContext, host: str, answer: DnsAnswer) -> bool:
    """Whether an empty TLSA answer came from a signed zone. A NODATA answer carries the AD
    bit itself; the resolver reports NXDOMAIN without it, so then the MX host's own address
    answer (in the same zone, as a rule) tells."""
    if answer.authenticated or answer.status is not DnsStatus.NXDOMAIN:
        return answer.authenticated
    a, aaaa = await context.resolver.addresses(host)
    return a.authenticated or aaaa.authenticated


def _invalid(name: str, reason: str) -> Finding:
    return Finding(
        Severity.WARNING,
        "DANE-INVALID",
        name,
        f"senders ignore this record: {reason}",
        "regenerate it as 3 1 1 <SHA-256 of the public key>",
    )


def _observations(context: SiteContext, host: str) -> list[Observation]:
    return [
        o
        for o in context.observations
        if o.endpoint.port == 25 and o.endpoint.host.rstrip(".").lower() == host
    ]


def _compare(
    name: str, host: str, usable: list[Tlsa], chains: list[Observation], secure: bool
) -> list[Finding]:
    findings: list[Finding] = []
    records = ", ".join(t.text() for t in usable[:4])
    unmatched = [o for o in chains if not any(matches(t, o.chain) for t in usable)]
    if unmatched:
        where = ", ".join(o.endpoint.address for o in unmatched[:6])
        findings.append(
            Finding(
                Severity.ERROR if secure else Severity.WARNING,
                "DANE-MISMATCH",
                host,
                f"no TLSA record ({records}) matches the chain {where} presented: "
                + (
                    "DANE senders will not deliver there"
                    if secure
                    else "senders ignore the records today (unsigned), but would not deliver"
                ),
                f"publish {name} TLSA 3 1 1 <SHA-256 of the current key's public key>, "
                "or serve the key the records name",
            )
        )
        return findings
    if not secure:
        return findings
    # Which certificates the records designate: one only (and no record for a next key) means
    # the next key change breaks delivery.
    designated: set[bytes] = set()
    for t in usable:
        for o in chains:
            designated.update(o.chain[i] for i in matches(t, o.chain))
    spare = [t for t in usable if not any(matches(t, o.chain) for o in chains)]
    if len(designated) <= 1 and not spare:
        findings.append(
            Finding(
                Severity.INFO,
                "DANE-ROLLOVER",
                name,
                f"every TLSA record ({records}) designates the one current certificate: the "
                "next key change breaks DANE delivery unless its record is published first",
                "publish a second record: the next key's 3 1 1, or 2 1 1 of the issuing CA",
            )
        )
    return findings
