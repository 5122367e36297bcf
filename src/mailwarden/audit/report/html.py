"""The audit as one HTML file a mail team can mail around, archive or open from a share.

Self-contained on purpose: one inline style sheet, an inline SVG drawn here on the server, no
script, and no URL that a browser would fetch (fonts are the reader's own), so the file looks
the same offline, years later, and leaks nothing when opened. Every value from the report goes
through Jinja's autoescaping, SVG labels included: certificate subjects and server replies are
untrusted text.

Colour is never the only signal: each grid cell says its state and codes in words.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from importlib.resources import files

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from mailwarden.audit.model import AuditReport, CertificateInfo, Endpoint, Observation
from mailwarden.audit.report.summary import (
    STATUS_WORD,
    Located,
    ServiceSummary,
    count_text,
    located_findings,
    observations,
    services,
    severity_counts,
    site_results,
    started_at,
)
from mailwarden.findings import Finding, Severity, worst

OTHER_ROW = "other"
"""The grid row of endpoints no mail domain names (the autoconfig host, extra endpoints)."""
_CN = re.compile(r"(?:^|,)\s*CN=((?:\\.|[^,\\])*)")
_BREAK_AFTER = re.compile(r"(?<=[.:@,])")
_LABEL_CHARS = 34

_ENV = Environment(
    loader=PackageLoader("mailwarden.audit.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def breakable(text: str) -> Markup:
    """``text`` escaped, with line-break opportunities after dots, colons and commas: a long
    host name wraps at a label, never inside one."""
    return Markup("<wbr>").join(escape(part) for part in _BREAK_AFTER.split(text))


_ENV.filters["breakable"] = breakable


@lru_cache(maxsize=1)
def _css() -> str:
    return (
        files("mailwarden.audit.report").joinpath("templates/audit.css").read_text(encoding="utf-8")
    )


@lru_cache(maxsize=1)
def _csp() -> str:
    """The page's own Content-Security-Policy: its one style sheet and nothing else, so even a
    value that slipped past escaping could neither run nor fetch anything."""
    digest = base64.b64encode(hashlib.sha256(_css().encode("utf-8")).digest()).decode("ascii")
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )


def state_of(findings: tuple[Finding, ...] | list[Finding]) -> str:
    """The CSS state of a set of findings: ``error``, ``warning``, ``unknown`` or ``ok``
    (notes alone are ok)."""
    severity = worst(findings)
    return "ok" if severity is Severity.INFO else severity.value


@dataclass(frozen=True, slots=True)
class Cell:
    state: str
    """``error``/``warning``/``unknown``/``ok``, or ``none`` when the domain does not use it."""
    word: str
    codes: tuple[str, ...]
    target: str
    """The id of the service's details."""


@dataclass(frozen=True, slots=True)
class GridRow:
    domain: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class Column:
    service: str
    kind: str
    anchor: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One certificate on the expiry timeline (shared by all endpoints that present it)."""

    y: float
    label: str
    subject: str
    role: str
    not_after: str
    days_left: float
    days_text: str
    state: str
    bar_x: float
    bar_width: float
    marker_x: float
    beyond: bool
    """Expires after the right edge (or before the left): the marker sits on the edge."""
    used_by: tuple[str, ...]
    sha256: str


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int
    height: int
    chart_left: float
    chart_right: float
    top: float
    today_x: float
    expired_zone: tuple[float, float]
    critical_zone: tuple[float, float]
    warn_zone: tuple[float, float]
    ticks: tuple[Tick, ...]
    rows: tuple[TimelineRow, ...]
    horizon: int
    warn_days: int
    critical_days: int


@dataclass(frozen=True, slots=True)
class EndpointView:
    endpoint: Endpoint
    observation: Observation | None
    results: tuple[tuple[str, str, str, tuple[Finding, ...]], ...]
    """(check, state, detail, findings) for each check of this endpoint."""
    chain: tuple[CertificateInfo, ...]


@dataclass(frozen=True, slots=True)
class ServiceView:
    summary: ServiceSummary
    anchor: str
    state: str
    endpoints: tuple[EndpointView, ...]


def common_name(subject: str) -> str:
    """The CN of an RFC 4514 subject, else the whole subject."""
    match = _CN.search(subject)
    if match is None:
        return subject
    return match.group(1).replace("\\", "") or subject


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def days_text(days: float) -> str:
    if days < 0:
        return f"expired {math.ceil(-days)} d ago"
    return f"{math.floor(days)} d left"


def _grid(
    report: AuditReport, summaries: list[ServiceSummary], anchors: dict[str, str]
) -> tuple[tuple[Column, ...], tuple[GridRow, ...]]:
    columns = tuple(Column(s.service, s.kind, anchors[s.service]) for s in summaries)
    domains = sorted({d for e in report.endpoints for d in e.domains})
    if any(not e.domains for e in report.endpoints):
        domains.append(OTHER_ROW)
    rows = []
    for domain in domains:
        cells = []
        for summary in summaries:
            members = [
                e
                for e in summary.endpoints
                if (domain in e.domains if domain != OTHER_ROW else not e.domains)
            ]
            if not members:
                cells.append(Cell("none", "not used", (), anchors[summary.service]))
                continue
            findings = [f for r in report.results if r.endpoint in members for f in r.findings]
            state = state_of(findings)
            codes = []
            for finding in sorted(findings, key=lambda f: -f.severity.rank):
                if finding.severity is not Severity.INFO and finding.code not in codes:
                    codes.append(finding.code)
            word = "OK" if state == "ok" else state
            cells.append(Cell(state, word, tuple(codes), anchors[summary.service]))
        rows.append(GridRow(domain, tuple(cells)))
    return columns, tuple(rows)


def _timeline(report: AuditReport, warn_days: int, critical_days: int) -> Timeline:
    """Every distinct certificate (by SHA-256) on a day axis from two weeks ago to the horizon
    (120 days, or further when the warning threshold is further)."""
    horizon = max(120, warn_days + 30)
    start = -15
    left, right, top, row_height = 230.0, 600.0, 34.0, 26.0
    by_label = {e.label: e for e in report.endpoints}
    certificates: dict[str, tuple[CertificateInfo, set[str]]] = {}
    for label, chain in report.certificates.items():
        endpoint = by_label.get(label)
        where = endpoint.service if endpoint else label
        for info in chain:
            known = certificates.get(info.sha256)
            if known is None or info.position < known[0].position:
                certificates[info.sha256] = (info, known[1] if known else set())
            certificates[info.sha256][1].add(where)

    def x(days: float) -> float:
        clamped = min(max(days, start), horizon)
        return round(left + (clamped - start) / (horizon - start) * (right - left), 1)

    ordered = sorted(certificates.values(), key=lambda item: (item[0].days_left, item[0].subject))
    rows = []
    for index, (info, used) in enumerate(ordered):
        days = info.days_left
        if days < critical_days:
            state = "error"
        elif days < warn_days:
            state = "warning"
        else:
            state = "ok"
        low, high = sorted((x(0), x(days)))
        rows.append(
            TimelineRow(
                y=top + 14 + index * row_height,
                label=_short(common_name(info.subject)),
                subject=info.subject,
                role="leaf" if info.position == 0 else "CA",
                not_after=info.not_after[:10],
                days_left=days,
                days_text=days_text(days),
                state=state,
                bar_x=low,
                bar_width=round(high - low, 1),
                marker_x=x(days),
                beyond=not start <= days <= horizon,
                used_by=tuple(sorted(used)),
                sha256=info.sha256,
            )
        )
    when = started_at(report)
    ticks = tuple(
        Tick(x(day), (when + timedelta(days=day)).strftime("%d %b"))
        for day in range(0, horizon + 1, 30)
    )
    return Timeline(
        width=820,
        height=int(top + 14 + max(len(rows), 1) * row_height),
        chart_left=left,
        chart_right=right,
        top=top,
        today_x=x(0),
        expired_zone=(left, x(0)),
        critical_zone=(x(0), x(critical_days)),
        warn_zone=(x(critical_days), x(warn_days)),
        ticks=ticks,
        rows=tuple(rows),
        horizon=horizon,
        warn_days=warn_days,
        critical_days=critical_days,
    )


def _services(
    report: AuditReport, summaries: list[ServiceSummary], anchors: dict[str, str]
) -> tuple[ServiceView, ...]:
    seen = observations(report)
    views = []
    for summary in summaries:
        endpoints = []
        for endpoint in summary.endpoints:
            results = tuple(
                (r.check, state_of(r.findings) if r.findings else "ok", r.detail, r.findings)
                for r in report.results
                if r.endpoint == endpoint
            )
            endpoints.append(
                EndpointView(
                    endpoint,
                    seen.get(endpoint),
                    results,
                    report.certificates.get(endpoint.label, ()),
                )
            )
        views.append(
            ServiceView(
                summary, anchors[summary.service], state_of(summary.findings), tuple(endpoints)
            )
        )
    return tuple(views)


def render_html(report: AuditReport) -> str:
    """The whole page; the audit's thresholds (``[audit] warn_days``/``critical_days``) shade
    the timeline's warning and critical zones."""
    summaries = services(report)
    anchors = {s.service: f"service-{index}" for index, s in enumerate(summaries, start=1)}
    columns, rows = _grid(report, summaries, anchors)
    located: list[Located] = located_findings(report)
    counts = severity_counts(item.finding for item in located)
    status = report.exit_status
    when = started_at(report)
    return _ENV.get_template("audit.html").render(
        css=_css(),
        report=report,
        date=when.strftime("%Y-%m-%d %H:%M UTC"),
        day=when.strftime("%Y-%m-%d"),
        status=STATUS_WORD[status],
        status_state=("ok", "warning", "error", "unknown")[status],
        counts=count_text(counts),
        columns=columns,
        rows=rows,
        timeline=_timeline(report, report.warn_days, report.critical_days),
        findings=located,
        services=_services(report, summaries, anchors),
        site_checks=[
            (r.subject, r.check, state_of(r.findings) if r.findings else "ok", r.detail, r.findings)
            for r in site_results(report)
        ],
        other_row=OTHER_ROW,
        days_text=days_text,
        csp=_csp(),
    )
