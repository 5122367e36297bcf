"""How findings look on a terminal, the same in every report (dns check, probe, audit)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from mailwarden.findings import Finding, Severity

SEVERITY_STYLE = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.UNKNOWN: "magenta",
    Severity.INFO: "cyan",
}
"""The one colour of each severity on a terminal."""


def print_finding(console: Console, finding: Finding) -> None:
    """A heading line (severity, code, what it is about), then the text and the fix, indented;
    long names wrap, they are never cut."""
    console.print(
        f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity.value}[/] "
        f"[bold]{escape(finding.code)}[/] {escape(finding.subject)}",
        soft_wrap=True,
    )
    console.print(f"    {escape(finding.message)}", soft_wrap=True)
    if finding.fix:
        console.print(f"    [dim]fix: {escape(finding.fix)}[/]", soft_wrap=True)
