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


def render_text(report: LintReport, console: Console) -> None:
    """Predictions as a table, then each finding with its explanation and corrected lines."""
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
            f"{PurePath(p.file).name}:{p.line}"
            if p.line
            else ("" if p.kind == "mta" else "default"),
        )
    console.print(table)
    console.print()
    for finding in report.findings:
        _finding(console, finding)
    counts = {
        s: sum(1 for f in report.findings if f.severity is s)
        for s in (Severity.FATAL, Severity.WARNING, Severity.INFO)
    }
    if not report.findings:
        console.print("[green]✓ no findings[/]")
    else:
        console.print(
            f"[bold red]{counts[Severity.FATAL]} fatal[/], "
            f"[yellow]{counts[Severity.WARNING]} warning(s)[/], "
            f"[cyan]{counts[Severity.INFO]} note(s)[/] — exit status {report.exit_status}"
        )
