"""The audit as the console shows it: the newest run's own HTML report, its status grid and
the history of finding counts, read from the folder where ``mailwarden audit --save-dir``
keeps every run (:mod:`mailwarden.audit.report.saved`).

Reading is bounded (file count, file size) and forgiving: a file that is not an audit report
is skipped and named on the page, never a 500. Building the grid and the history is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailwarden.audit.report.saved import LATEST_HTML, LATEST_JSON, run_key

MAX_REPORTS = 500
MAX_REPORT_BYTES = 32 << 20
SEVERITIES = ("critical", "warning", "unknown", "info")
_RANK = {"ok": 0, "info": 1, "unknown": 2, "warning": 3, "critical": 4}
_WORD = {"error": "critical"}
"""The audit's severity ``error`` is the monitoring word ``critical`` on these pages."""


@dataclass(frozen=True, slots=True)
class Run:
    """One audit run: when, its status and its finding counts."""

    started: str
    status: str
    counts: dict[str, int]
    name: str


@dataclass(frozen=True, slots=True)
class Grid:
    """Subjects (endpoints, domains) × checks, each cell a severity word or ``""``."""

    checks: list[str]
    rows: list[tuple[str, list[str]]]


@dataclass(slots=True)
class AuditView:
    latest: Run | None = None
    grid: Grid | None = None
    history: list[Run] = field(default_factory=list)
    findings: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    html: Path | None = None


def run_of(report: dict[str, Any], name: str) -> Run:
    raw = report.get("counts")
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for key, number in raw.items() if isinstance(raw, dict) else ():
        word = _WORD.get(str(key), str(key))
        if word in counts and isinstance(number, int):
            counts[word] += number
    return Run(str(report.get("started", "")), str(report.get("status", "")), counts, name)


def grid_of(report: dict[str, Any]) -> Grid:
    """The worst severity each check gave each subject (``ok`` without findings)."""
    checks: list[str] = []
    cells: dict[str, dict[str, str]] = {}
    for result in report.get("results") or []:
        check, subject = str(result.get("check", "")), str(result.get("subject", ""))
        severity = str(result.get("severity", "ok"))
        severity = _WORD.get(severity, severity)
        if check not in checks:
            checks.append(check)
        row = cells.setdefault(subject, {})
        if _RANK.get(severity, 0) >= _RANK.get(row.get(check, "ok"), 0):
            row[check] = severity
    return Grid(checks, [(s, [row.get(c, "") for c in checks]) for s, row in cells.items()])


def is_report(data: object) -> bool:
    return isinstance(data, dict) and data.get("schema") is not None and "results" in data


def read_audit(folder: Path | None) -> AuditView:
    """The newest run in ``folder`` (its grid and findings) and every run's counts, oldest
    first. The newest is the one whose ``started`` is latest, whatever the file names."""
    view = AuditView()
    if folder is None or not folder.is_dir():
        return view
    files = sorted(
        (p for p in folder.glob("*.json") if _own_file(p) and p.name != LATEST_JSON),
        key=lambda p: (run_key(p.name) or ("", 0), p.name),
    )[-MAX_REPORTS:]
    reports: list[tuple[str, dict[str, Any], str]] = []
    for path in files:
        try:
            if path.stat().st_size > MAX_REPORT_BYTES:
                raise ValueError("too large")
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            view.skipped.append(path.name)
            continue
        if not is_report(data):
            view.skipped.append(path.name)
            continue
        reports.append((str(data.get("started", "")), data, path.name))
    reports.sort(key=lambda r: r[0])
    view.history = [run_of(data, name) for _, data, name in reports]
    if reports:
        _, newest, name = reports[-1]
        view.latest = run_of(newest, name)
        view.grid = grid_of(newest)
        view.findings = [
            {
                "severity": _WORD.get(str(f.get("severity", "")), str(f.get("severity", ""))),
                "code": str(f.get("code", "")),
                "subject": str(f.get("endpoint") or f.get("subject") or ""),
                "message": str(f.get("message", "")),
            }
            for f in (newest.get("findings") or [])[:500]
            if isinstance(f, dict)
        ]
    view.html = latest_html(folder)
    return view


def _own_file(path: Path) -> bool:
    """A regular file, not a link (``latest.json`` is one run again, under another name)."""
    return path.is_file() and not path.is_symlink()


def latest_html(folder: Path) -> Path | None:
    """The newest run's HTML report: ``latest.html`` when it points at a file in ``folder``,
    else the newest ``audit-<time>.html``. A link leading out of the folder is not followed."""
    latest = folder / LATEST_HTML
    try:
        target = latest.resolve(strict=True)
    except (OSError, RuntimeError):
        target = None
    if target is not None and target.parent == folder.resolve() and target.is_file():
        return latest
    runs = [
        (key, p) for p in folder.glob("audit-*.html") if (key := run_key(p.name)) and _own_file(p)
    ]
    return max(runs)[1] if runs else None
