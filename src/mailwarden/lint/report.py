"""Renderers for a :class:`LintReport`: a coloured terminal view and a JSON document.

They only format; every decision (outcomes, severities, the exit status) was made by the rules.
"""

from __future__ import annotations

import json
from pathlib import PurePath

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from mailwarden.lint.findings import Finding, LintReport, Outcome, Severity

OUTCOME_STYLE: dict[Outcome, str] = {
    Outcome.STARTS: "green",
    Outcome.BINDS: "green",
    Outcome.FATAL_AT_STARTUP: "bold red",
    Outcome.MTA_EXITS: "bold red",
    Outcome.MTA_EXITS_AT_ONCE: "bold red",
    Outcome.DELIVERY_FAILS: "bold red",
    Outcome.SILENTLY_DISABLED: "yellow",
    Outcome.IPV4_REFUSED: "yellow",
    Outcome.NOT_STARTED: "dim",
}

SEVERITY_STYLE: dict[Severity, str] = {
    Severity.FATAL: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
}


TABLE_ROWS = 200
"""Up to this many predictions plus findings the report is drawn with rich (table, colours,
wrapped paragraphs). rich costs about half a millisecond per row or paragraph, so a hostile or
generated file with thousands of daemons would take many seconds; beyond this it gets the plain
layout, which is written in one piece and costs microseconds per row."""

TABLE_CHARS = 256 * 1024
"""The same switch by size: a few rows holding megabytes of text (one 4 MiB ``Name=``) are
plain too, so rich never has to measure and wrap a giant cell."""

PLAIN_COLUMN = 32
"""The plain layout pads a column to its widest cell, but never beyond this, so one huge name
cannot pad every other row to its width."""


def to_json(report: LintReport) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _where(file: str, line: int) -> str:
    return f"{file}:{line}" if line else f"{file} (default)"


def _finding(console: Console, finding: Finding) -> None:
    style = SEVERITY_STYLE[finding.severity]
    console.print(
        f"[{style}]{finding.severity.value.upper()} {finding.code}[/] "
        f"[bold]{escape(finding.subject)}[/]  {escape(_where(finding.file, finding.line))}"
    )
    console.print(Padding(Text(finding.message), (0, 0, 0, 2)))
    console.print("  [bold]fix:[/]")
    for line in finding.fix.splitlines():
        console.print(f"    [cyan]{escape(line)}[/]", soft_wrap=True)
    console.print()


def _size(report: LintReport) -> int:
    return sum(len(p.subject) + len(p.detail) for p in report.predictions) + sum(
        len(f.subject) + len(f.message) + len(f.fix) for f in report.findings
    )


def _where_short(kind: str, file: str, line: int) -> str:
    if line:
        return f"{PurePath(file).name}:{line}"
    return "" if kind == "mta" else "default"


def _summary(report: LintReport) -> tuple[dict[Severity, int], str]:
    counts = dict.fromkeys((Severity.FATAL, Severity.WARNING, Severity.INFO), 0)
    for finding in report.findings:
        counts[finding.severity] += 1
    return counts, f"exit status {report.exit_status}"


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters (a longer word keeps its own line),
    each indented by two spaces. A greedy fill: linear in the text, unlike textwrap, whose
    chopping of a long word copies the rest of it for every line."""
    lines: list[str] = []
    current: list[str] = []
    used = 0
    for word in text.split():
        if current and used + 1 + len(word) > width:
            lines.append("  " + " ".join(current))
            current, used = [], 0
        used += len(word) + (1 if current else 0)
        current.append(word)
    if current:
        lines.append("  " + " ".join(current))
    return lines


def render_plain(report: LintReport, width: int) -> str:
    """The report for a very large configuration: the same content as :func:`render_text`, in
    plain aligned columns and paragraphs wrapped to ``width``, built in time linear in its size."""
    out: list[str] = [f"note: {note}" for note in report.notes]
    out.append(
        f"{report.mta}: {report.target} — predicted at start-up "
        f"({len(report.predictions)} entries, {len(report.findings)} findings: plain layout)"
    )
    rows = [("kind", "name", "predicted outcome", "where", "detail")]
    rows += [
        (p.kind, p.subject, p.outcome.value, _where_short(p.kind, p.file, p.line), p.detail)
        for p in report.predictions
    ]
    widths = [min(PLAIN_COLUMN, max(len(row[column]) for row in rows)) for column in range(4)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)]
        out.append("  ".join([*cells, row[4]]).rstrip())
    out.append("")
    wrapped: dict[str, list[str]] = {}  # generated files repeat the same message thousands of times
    for finding in report.findings:
        out.append(
            f"{finding.severity.value.upper()} {finding.code} {finding.subject}  "
            f"{_where(finding.file, finding.line)}"
        )
        if finding.message not in wrapped:
            wrapped[finding.message] = _wrap(finding.message, max(20, width - 2))
        out.extend(wrapped[finding.message])
        out.append("  fix:")
        out.extend(f"    {line}" for line in finding.fix.splitlines())
        out.append("")
    counts, status = _summary(report)
    if not report.findings:
        out.append("✓ no findings")
    else:
        out.append(
            f"{counts[Severity.FATAL]} fatal, {counts[Severity.WARNING]} warning(s), "
            f"{counts[Severity.INFO]} note(s) — {status}"
        )
    return "\n".join(out) + "\n"


def render_text(report: LintReport, console: Console) -> None:
    """Predictions as a table, then each finding with its explanation and corrected lines.

    A report too large to draw quickly (see :data:`TABLE_ROWS`) is written in the plain layout.
    """
    if len(report.predictions) + len(report.findings) > TABLE_ROWS or _size(report) > TABLE_CHARS:
        console.file.write(render_plain(report, console.width))
        return
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    table = Table(
        title=f"{report.mta}: {escape(report.target)} — predicted at start-up", title_justify="left"
    )
    for column in ("kind", "name", "predicted outcome", "detail", "where"):
        table.add_column(column)
    for p in report.predictions:
        style = OUTCOME_STYLE[p.outcome]
        table.add_row(
            p.kind,
            escape(p.subject),
            f"[{style}]{escape(p.outcome.value)}[/]",
            escape(p.detail),
            _where_short(p.kind, p.file, p.line),
        )
    console.print(table)
    console.print()
    for finding in report.findings:
        _finding(console, finding)
    counts, status = _summary(report)
    if not report.findings:
        console.print("[green]✓ no findings[/]")
    else:
        console.print(
            f"[bold red]{counts[Severity.FATAL]} fatal[/], "
            f"[yellow]{counts[Severity.WARNING]} warning(s)[/], "
            f"[cyan]{counts[Severity.INFO]} note(s)[/] — {status}"
        )
