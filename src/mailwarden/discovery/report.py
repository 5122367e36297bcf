"""Rendering probe and DNS-check results for people (rich) and machines (JSON).

Only formatting lives here: the results are values made elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailwarden.discovery.context import ClientResult
from mailwarden.discovery.probe import ProbeReport
from mailwarden.discovery.settings import ServerSetting
from mailwarden.discovery.steps import Outcome, Step
from mailwarden.findings import Finding, Severity
from mailwarden.findings_console import print_finding

_MARK = {
    Outcome.OK: "[green]✓[/]",
    Outcome.FAILED: "[red]✗[/]",
    Outcome.SKIPPED: "[dim]–[/]",
    Outcome.NOTICE: "[yellow]![/]",
}


def _setting(role: str, server: ServerSetting | None) -> str:
    if server is None:
        return f"{role}: [red]none[/]"
    return (
        f"{role}: [bold]{escape(server.kind.upper())} {escape(server.host)}:{server.port}[/] "
        f"{server.tls}, login [bold]{escape(server.login)}[/]"
    )


def _print_steps(console: Console, steps: Sequence[Step]) -> None:
    """One line per step (mark, priority, action, target, timing), its result indented below:
    long URLs stay whole and greppable at any terminal width."""
    for step in steps:
        marker = _MARK[step.outcome] + ("[bold green] ◀ chosen[/]" if step.chosen else "")
        priority = f"#{step.priority} " if step.priority is not None else ""
        console.print(
            f"  {marker} {priority}{escape(step.action)} {escape(step.target)} "
            f"[dim]at {step.started_ms:.0f} ms, {step.ms:.0f} ms[/]",
            soft_wrap=True,
        )
        console.print(f"      {escape(step.detail)}", soft_wrap=True)
        if step.tls and step.outcome is Outcome.OK:
            console.print(f"      [dim]{escape(step.tls)}[/]", soft_wrap=True)


def _client(console: Console, result: ClientResult) -> None:
    console.print(f"\n[bold underline]{escape(result.label)}[/]")
    if result.settings is not None:
        console.print("  " + _setting("incoming", result.settings.incoming))
        console.print("  " + _setting("outgoing", result.settings.outgoing))
        for alternative in result.settings.alternatives:
            console.print("  [dim]also offered: " + escape(alternative.line()) + "[/]")
        console.print(f"  [dim]from {escape(result.source or '?')}[/]", soft_wrap=True)
    else:
        console.print("  [bold red]no settings[/]")
    for question in result.asks_user:
        console.print(f"  [yellow]asks the user:[/] {escape(question)}", soft_wrap=True)
    _print_steps(console, result.steps)


def print_findings(console: Console, findings: Sequence[Finding]) -> None:
    for finding in findings:
        print_finding(console, finding)
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    console.print(
        f"{counts[Severity.ERROR]} errors, {counts[Severity.WARNING]} warnings, "
        f"{counts[Severity.INFO]} notes"
    )


def render_probe(report: ProbeReport, console: Console) -> None:
    console.print(
        f"[bold]Probe of {escape(report.address)}[/] ({escape(report.resolver)}; "
        f"{report.ms / 1000:.2f} s; site file: {escape(report.expected_note)})",
        soft_wrap=True,
    )
    for result in report.clients:
        _client(console, result)
    if report.servers:
        console.print("\n[bold underline]Mail servers, as the clients were told[/]")
        table = Table(show_header=True, header_style="bold", expand=False)
        table.add_column("server", overflow="fold")
        table.add_column("", no_wrap=True)
        table.add_column("TLS", overflow="fold")
        table.add_column("AUTH after TLS", overflow="fold")
        for server in report.servers:
            endpoint = server.endpoint
            table.add_row(
                f"{endpoint.kind.upper()} {escape(endpoint.host)}:{endpoint.port} {endpoint.tls}",
                "[green]✓[/]" if server.ok else "[red]✗[/]",
                escape(server.tls_version or "—"),
                escape(" ".join(server.mechanisms) or "—"),
            )
        console.print(table)
    findings = report.all_findings()
    if findings:
        console.print("\n[bold underline]Findings[/]")
        print_findings(console, findings)
    else:
        console.print("\n[green]✓ no findings[/]")


def probe_json(report: ProbeReport) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
