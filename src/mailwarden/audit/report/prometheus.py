"""The audit as metrics for node_exporter's textfile collector (``--prometheus FILE``).

The text is made by prometheus_client from one collector over the report, so HELP/TYPE lines
and the escaping of label values (``\\``, ``"``, line breaks) follow the exposition format
exactly. Samples carry no timestamps: the textfile collector refuses them; the time of the
run is a metric of its own, so alerts can tell a stale file from a good audit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailwarden.audit.model import AuditReport, Endpoint
from mailwarden.audit.report.summary import (
    WORST_FIRST,
    located_findings,
    observations,
    severity_counts,
    site_results,
    started_at,
)

PREFIX = "mailwarden_audit"


class _ReportCollector(Collector):
    """Every metric of one finished audit, read from its report."""

    def __init__(self, report: AuditReport) -> None:
        self._report = report

    def collect(self) -> Iterator[Metric]:
        report = self._report
        by_label = {endpoint.label: endpoint for endpoint in report.endpoints}

        days = GaugeMetricFamily(
            f"{PREFIX}_certificate_days_left",
            "Days until the certificate expires (negative: expired), per endpoint and position "
            "in the chain it presented (0 = leaf).",
            labels=["service", "address", "position", "subject"],
        )
        for label, chain in report.certificates.items():
            endpoint = by_label.get(label)
            service, address = (endpoint.service, endpoint.address) if endpoint else (label, "")
            for info in chain:
                days.add_metric(
                    [service, address, str(info.position), info.subject], info.days_left
                )
        yield days

        counts = severity_counts(item.finding for item in located_findings(report))
        findings = GaugeMetricFamily(
            f"{PREFIX}_findings", "Findings of the last audit by severity.", labels=["severity"]
        )
        for severity in WORST_FIRST:
            findings.add_metric([severity.value], counts[severity])
        yield findings

        yield GaugeMetricFamily(
            f"{PREFIX}_status",
            "Exit status of the last audit: 0 OK, 1 warning, 2 critical, 3 unknown.",
            value=report.exit_status,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_duration_seconds", "Wall time of the last audit.", value=report.seconds
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_last_run_timestamp_seconds",
            "When the last audit started (Unix time).",
            value=started_at(report).timestamp(),
        )

        up = GaugeMetricFamily(
            f"{PREFIX}_endpoint_up",
            "1 when a TLS session was made with the endpoint, else 0.",
            labels=["service", "address"],
        )
        seen = observations(report)
        for endpoint in report.endpoints:
            if endpoint in seen:
                up.add_metric([endpoint.service, endpoint.address], 1 if seen[endpoint].ok else 0)
        yield up

        per_endpoint = GaugeMetricFamily(
            f"{PREFIX}_endpoint_findings",
            "Findings per endpoint and severity (only the severities it has).",
            labels=["service", "address", "severity"],
        )
        for (endpoint, level), number in _per_endpoint(report).items():
            per_endpoint.add_metric([endpoint.service, endpoint.address, level], number)
        yield per_endpoint

        per_subject = GaugeMetricFamily(
            f"{PREFIX}_site_findings",
            "Findings of the site-wide checks per check, subject (a mail domain, an outbound "
            "address, the virus scanner) and severity (only the severities it has).",
            labels=["check", "subject", "severity"],
        )
        for (check, subject, level), number in _per_subject(report).items():
            per_subject.add_metric([check, subject, level], number)
        yield per_subject


def _per_endpoint(report: AuditReport) -> dict[tuple[Endpoint, str], int]:
    counts: dict[tuple[Endpoint, str], int] = {}
    for result in report.results:
        if result.endpoint is None:
            continue
        for finding in result.findings:
            key = (result.endpoint, finding.severity.value)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _per_subject(report: AuditReport) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for result in site_results(report):
        for finding in result.findings:
            key = (result.check, result.subject, finding.severity.value)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _registry(report: AuditReport) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report))
    return registry


def render_prometheus(report: AuditReport) -> str:
    """The exposition text (Prometheus text format 0.0.4)."""
    return generate_latest(_registry(report)).decode("utf-8")


def write_prometheus(report: AuditReport, path: Path) -> None:
    """Replace ``path`` in one step (temporary file in the same directory, then rename), so
    node_exporter never reads half a file."""
    text = render_prometheus(report)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
