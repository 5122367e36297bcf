"""Does a service answer the same on IPv4 and IPv6?

A published AAAA address that does not serve is worse than none: clients and MTAs on IPv6
networks try it first (RFC 6724/8305) and wait for the connection to time out before they fall
back to IPv4 — if they fall back at all — so users see a hang, not an error. Hence an error,
although IPv4 works. The opposite, an auditing host without IPv6, says nothing about the server
and is *unknown*. Both families should also present the same certificate: two configurations
drift apart (one renewed, the other not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mailwarden.audit.checks.base import CheckContext, listed
from mailwarden.audit.checks.certificates import parse_chain
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Finding, Severity

NAME = "dualstack"

CODES: dict[str, str] = {
    "DUALSTACK-V6-BROKEN": (
        "The service publishes an AAAA address that does not answer (refused, timed out, or "
        "the TLS handshake failed) while its IPv4 address works. Clients on IPv6 networks try "
        "IPv6 first and hang until the connection times out; MTAs defer mail. The sendmail "
        "daemon that fails to bind its IPv6 socket is a classic cause. Make the daemon listen "
        "on the IPv6 address (Postfix inet_protocols = all, Dovecot listen = *, ::), open the "
        "firewall for IPv6, or remove the AAAA record until it serves."
    ),
    "DUALSTACK-V4-BROKEN": (
        "The service's IPv4 address does not answer while its IPv6 address works. Clients "
        "without IPv6 (still most home and mobile networks) cannot connect at all. Make the "
        "daemon listen on the IPv4 address and check the firewall, or remove the A record."
    ),
    "DUALSTACK-NO-V6-ROUTE": (
        "The auditing host has no IPv6 route, so the service's AAAA addresses could not be "
        "tested. This is not the server's fault and the result is unknown. Run the audit from "
        "a host with IPv6 connectivity to judge them."
    ),
    "DUALSTACK-NO-V4-ROUTE": (
        "The auditing host has no IPv4 route, so the service's A addresses could not be "
        "tested (unknown). Run the audit from a host with IPv4 connectivity to judge them."
    ),
    "DUALSTACK-CERT-DIFFERS": (
        "The service presents a different leaf certificate over IPv4 than over IPv6. Usually "
        "two servers or two configurations drifted apart: one was renewed and the other not, "
        "and the stale one will expire unnoticed. Install the same certificate on every "
        "address (or check that both are intended and both are renewed)."
    ),
    "DUALSTACK-SINGLE-FAMILY": (
        "The service has addresses of only one family: IPv4 only (no AAAA record) or IPv6 "
        "only (no A record). An IPv4-only mail service works for everyone today; publishing "
        "AAAA spares IPv6-only clients a NAT64 detour. An IPv6-only service is unreachable "
        "from IPv4-only networks. A note, not a problem, unless the AAAA is expected."
    ),
}

Family = Literal[4, 6]

_UNTESTED = frozenset({"no-route", "refused-service"})
"""Failures that say nothing about whether the address serves."""


def _addresses(observations: Sequence[Observation]) -> str:
    return listed([o.endpoint.address for o in observations])


def _reason(observation: Observation) -> str:
    return shorten(observation.error or "", 120) or "no TLS session"


def _leaf(observation: Observation) -> str | None:
    leaf = parse_chain(observation.chain[:1]).leaf
    return leaf.sha256 if leaf is not None else None


def _leaf_text(observations: Sequence[Observation]) -> str:
    texts = []
    for observation in observations:
        leaf = parse_chain(observation.chain[:1]).leaf
        if leaf is not None:
            text = (
                f"{leaf.common_name} until {leaf.not_after:%Y-%m-%d} (sha256 {leaf.sha256[:16]}…)"
            )
            if text not in texts:
                texts.append(text)
    return listed(texts, 3)


def _family_findings(
    service: str, family: Family, own: list[Observation], other: list[Observation]
) -> list[Finding]:
    findings = []
    no_route = [o for o in own if o.error_kind == "no-route"]
    if no_route:
        findings.append(
            Finding(
                Severity.UNKNOWN,
                f"DUALSTACK-NO-V{family}-ROUTE",
                service,
                f"this host has no IPv{family} route: {_addresses(no_route)} not tested",
                f"run the audit from a host with IPv{family}",
            )
        )
    broken = [o for o in own if not o.ok and o.error_kind not in _UNTESTED]
    other_works = [o for o in other if o.ok]
    if broken and other_works:
        other_family = 4 if family == 6 else 6
        reasons = listed([f"{o.endpoint.address}: {_reason(o)}" for o in broken])
        findings.append(
            Finding(
                Severity.ERROR,
                f"DUALSTACK-V{family}-BROKEN",
                service,
                f"IPv{other_family} works ({_addresses(other_works)}) but IPv{family} does "
                f"not: {reasons}",
                f"make the service answer on its IPv{family} address(es), or remove the "
                f"{'AAAA' if family == 6 else 'A'} record",
            )
        )
    return findings


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per service (``host:port``), attached to its first IPv6 address when it has
    one (dual stack is mostly about IPv6), else to its first address."""
    if not observations:
        return []
    v4 = [o for o in observations if o.endpoint.family == 4]
    v6 = [o for o in observations if o.endpoint.family == 6]
    endpoint = (v6 or v4)[0].endpoint
    service = endpoint.service
    if not v4 or not v6:
        family: Family = 4 if v4 else 6
        message = (
            f"only IPv4 addresses are published ({_addresses(v4)}): no AAAA record"
            if family == 4
            else f"only IPv6 addresses are published ({_addresses(v6)}): IPv4-only networks "
            "cannot reach it"
        )
        note = Finding(
            Severity.INFO,
            "DUALSTACK-SINGLE-FAMILY",
            service,
            message,
            "publish an AAAA record once the service listens on IPv6"
            if family == 4
            else "publish an A record",
        )
        return [CheckResult(NAME, endpoint, (note,), f"IPv{family} only")]
    findings = _family_findings(service, 6, v6, v4) + _family_findings(service, 4, v4, v6)
    ok4 = [o for o in v4 if o.ok]
    ok6 = [o for o in v6 if o.ok]
    leaves4 = {leaf for leaf in map(_leaf, ok4) if leaf}
    leaves6 = {leaf for leaf in map(_leaf, ok6) if leaf}
    if leaves4 and leaves6 and leaves4 != leaves6:
        findings.append(
            Finding(
                Severity.WARNING,
                "DUALSTACK-CERT-DIFFERS",
                service,
                f"IPv4 presents {_leaf_text(ok4)}; IPv6 presents {_leaf_text(ok6)}",
                "install the same certificate on every address and renew them together",
            )
        )
    same = "same certificate" if leaves4 and leaves4 == leaves6 else "certificates not compared"
    if leaves4 and leaves6 and leaves4 != leaves6:
        same = "different certificates"
    detail = f"IPv4 {len(ok4)}/{len(v4)} and IPv6 {len(ok6)}/{len(v6)} addresses answer; {same}"
    return [CheckResult(NAME, endpoint, tuple(findings), detail)]
