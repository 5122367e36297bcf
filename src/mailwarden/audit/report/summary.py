"""What every audit report shows, computed once: findings with the endpoint they are about,
counts by severity, and one line of facts per service (``host:port``, all its addresses).

Monitoring and people think in services, the scanner in addresses: a service is as bad as its
worst address, and its certificate is as close to expiry as the soonest leaf any address sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailwarden.audit.model import (
    AuditReport,
    CheckResult,
    Endpoint,
    Observation,
    Protocol,
    TlsMode,
)
from mailwarden.findings import Finding, Severity, worst

STATUS_WORD = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
"""The monitoring word of each exit status (the Nagios plugin convention)."""

WORST_FIRST = (Severity.ERROR, Severity.WARNING, Severity.UNKNOWN, Severity.INFO)
_NOUN = {
    Severity.ERROR: ("error", "errors"),
    Severity.WARNING: ("warning", "warnings"),
    Severity.UNKNOWN: ("unknown", "unknown"),
    Severity.INFO: ("note", "notes"),
}


@dataclass(frozen=True, slots=True)
class Located:
    """A finding with the check that made it and the endpoint that check looked at; both None
    for a finding about no single endpoint (``AuditReport.general``)."""

    finding: Finding
    check: str | None
    endpoint: Endpoint | None

    @property
    def where(self) -> str:
        """The endpoint's label, else what the finding is about."""
        return self.endpoint.label if self.endpoint is not None else self.finding.subject


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One ``host:port`` across its addresses."""

    service: str
    host: str
    port: int
    protocol: Protocol
    tls: TlsMode
    endpoints: tuple[Endpoint, ...]
    findings: tuple[Finding, ...]
    leaf_days: float | None
    """Days left of the soonest-expiring leaf any address presented; None without one."""
    up: int
    """How many of its addresses completed a TLS handshake."""

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(e.address for e in self.endpoints)

    @property
    def severity(self) -> Severity:
        return worst(self.findings)

    @property
    def has_problems(self) -> bool:
        return any(f.severity is not Severity.INFO for f in self.findings)

    @property
    def kind(self) -> str:
        return service_kind(self.endpoints[0])

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({d for e in self.endpoints for d in e.domains}))


def located_findings(report: AuditReport) -> list[Located]:
    """Every finding, worst first; equal ones keep their order (general findings first, then
    the checks' in the order they ran)."""
    found = [Located(finding, None, None) for finding in report.general]
    found += [
        Located(finding, result.check, result.endpoint)
        for result in report.results
        for finding in result.findings
    ]
    return sorted(found, key=lambda item: -item.finding.severity.rank)


def severity_counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    counts = dict.fromkeys(WORST_FIRST, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


def count_text(counts: dict[Severity, int]) -> str:
    """``2 errors, 1 warning, 0 unknown, 3 notes``."""
    return ", ".join(
        f"{counts[s]} {_NOUN[s][0] if counts[s] == 1 else _NOUN[s][1]}" for s in WORST_FIRST
    )


def observations(report: AuditReport) -> dict[Endpoint, Observation]:
    """The observation of each endpoint (the last one, should a runner record two)."""
    return {observation.endpoint: observation for observation in report.observations}


def leaf_days(report: AuditReport, endpoint: Endpoint) -> float | None:
    chain = report.certificates.get(endpoint.label, ())
    days = [info.days_left for info in chain if info.position == 0]
    return min(days) if days else None


def services(report: AuditReport) -> list[ServiceSummary]:
    """One summary per ``host:port``, in the order the endpoints were listed."""
    grouped: dict[str, list[Endpoint]] = {}
    for endpoint in report.endpoints:
        grouped.setdefault(endpoint.service, []).append(endpoint)
    seen = observations(report)
    summaries = []
    for service, endpoints in grouped.items():
        findings = tuple(
            f
            for r in report.results
            if r.endpoint is not None and r.endpoint.service == service
            for f in r.findings
        )
        days = [d for d in (leaf_days(report, e) for e in endpoints) if d is not None]
        first = endpoints[0]
        summaries.append(
            ServiceSummary(
                service=service,
                host=first.host,
                port=first.port,
                protocol=first.protocol,
                tls=first.tls,
                endpoints=tuple(endpoints),
                findings=findings,
                leaf_days=min(days) if days else None,
                up=sum(1 for e in endpoints if e in seen and seen[e].ok),
            )
        )
    return summaries


def site_results(report: AuditReport) -> list[CheckResult]:
    """The site-wide checks' results (about a domain, an address, the virus scanner), in the
    order they ran."""
    return [result for result in report.results if result.endpoint is None]


def started_at(report: AuditReport) -> datetime:
    """``report.started`` as an aware UTC time (a time without zone is taken as UTC)."""
    when = datetime.fromisoformat(report.started)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def service_kind(endpoint: Endpoint) -> str:
    """What a mail admin calls the service: ``MX`` for an MX host, ``submission`` for 587…"""
    if endpoint.protocol == "smtp":
        if any(role.startswith("MX") for role in endpoint.roles):
            return "MX"
        return {465: "submissions", 587: "submission"}.get(endpoint.port, "SMTP")
    return endpoint.protocol.upper()
