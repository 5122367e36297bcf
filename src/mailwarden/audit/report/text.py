"""The audit for a terminal: what to fix first, then how each service stands, then one total.

Finding lines are soft-wrapped, never cut, so host names and codes stay whole and greppable;
the service summary is laid out to fit 80 columns for ordinary host names.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape

from mailwarden.audit.model import AuditReport, CheckResult
from mailwarden.audit.report.summary import (
    ServiceSummary,
    count_text,
    located_findings,
    services,
    severity_counts,
    site_results,
    started_at,
)
from mailwarden.findings import Severity
from mailwarden.findings_console import SEVERITY_STYLE, print_finding

_SERVICE_WIDTH = 32
"""Service names up to this long line up; longer ones push their line (never cut)."""


def days_text(days: float | None) -> str:
    """``48 d left``, ``expired 3 d ago``, or ``no certificate``."""
    if days is None:
        return "no certificate"
    if days < 0:
        return f"expired {math.ceil(-days)} d ago"
    return f"{math.floor(days)} d left"


def _service_line(summary: ServiceSummary, width: int) -> str:
    state = summary.severity.value if summary.has_problems else "ok"
    style = SEVERITY_STYLE[summary.severity] if summary.has_problems else "green"
    return (
        f"  [bold]{escape(summary.service.ljust(width))}[/] {summary.kind.ljust(11)} "
        f"[{style}]{state.ljust(7)}[/] leaf {days_text(summary.leaf_days)}"
    )


def _site_line(result: CheckResult, width: int) -> str:
    problems = any(f.severity is not Severity.INFO for f in result.findings)
    state = result.severity.value if problems else "ok"
    style = SEVERITY_STYLE[result.severity] if problems else "green"
    detail = f" [dim]{escape(result.detail)}[/]" if result.detail else ""
    return (
        f"  [bold]{escape(result.subject.ljust(width))}[/] {result.check.ljust(11)} "
        f"[{style}]{state.ljust(7)}[/]{detail}"
    )


def render_text(report: AuditReport, console: Console) -> None:
    """Worst finding first, each with its fix; then one summary line per service; then the
    total (counts by severity, endpoints, seconds)."""
    when = started_at(report).strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"[bold]Audit of {escape(report.site)}[/] [dim]{when}[/]", soft_wrap=True)
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)

    findings = located_findings(report)
    if findings:
        console.print("\n[bold underline]Findings[/]")
        for item in findings:
            print_finding(console, item.finding)
    else:
        console.print("\n[green]✓ no findings[/]")

    summaries = services(report)
    if summaries:
        console.print("\n[bold underline]Services[/]")
        width = min(_SERVICE_WIDTH, max(len(s.service) for s in summaries))
        for summary in summaries:
            console.print(_service_line(summary, width), soft_wrap=True)
            console.print(f"      [dim]{escape(', '.join(summary.addresses))}[/]", soft_wrap=True)

    site = site_results(report)
    if site:
        console.print("\n[bold underline]Domains, outbound addresses, virus scanner[/]")
        width = min(_SERVICE_WIDTH, max(len(r.subject) for r in site))
        for result in site:
            console.print(_site_line(result, width), soft_wrap=True)

    counts = severity_counts(f.finding for f in findings)
    endpoints = len(report.endpoints)
    console.print(
        f"\n{count_text(counts)} · {endpoints} endpoint{'s' if endpoints != 1 else ''} · "
        f"{report.seconds:.1f} s"
    )
