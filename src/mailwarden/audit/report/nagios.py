"""The audit as a Nagios / Icinga plugin answer: status line, long output, perfdata, exit code.

The layout is the plugin API's: the first line is what the monitoring overview shows (status,
counts, the worst problems) followed by ``|`` and the summary perfdata; the long output lists
every finding, one per line; its last line carries, after a second ``|``, one perfdata value
per service (days left of its leaf) with the warning and critical thresholds. ``|`` never
appears in text (it would start perfdata), nor does a line break inside one finding.
"""

from __future__ import annotations

import math
import re

from mailwarden.audit.model import AuditReport
from mailwarden.audit.report.summary import (
    STATUS_WORD,
    WORST_FIRST,
    Located,
    located_findings,
    services,
    severity_counts,
    site_results,
)
from mailwarden.findings import Severity

PREFIX = "MAILWARDEN AUDIT"
_FIRST_LINE_PROBLEMS = 5
"""How many problems the first line names; the long output has them all."""
_SPACE = re.compile(r"\s+")
_COUNT_WORD = {
    Severity.ERROR: "critical",
    Severity.WARNING: "warning",
    Severity.UNKNOWN: "unknown",
    Severity.INFO: "info",
}


def _clean(text: str) -> str:
    """One line, without the perfdata separator."""
    return _SPACE.sub(" ", text).replace("|", "/").strip()


def perf_label(label: str) -> str:
    """A quoted perfdata label: ``'`` doubled, ``=`` (which ends a label) replaced."""
    return "'" + _clean(label).replace("=", "_").replace("'", "''") + "'"


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _problems(located: list[Located]) -> str:
    """``imap.example.edu:993 TLS-EXPIRED; …`` for the findings that set the status."""
    named: list[str] = []
    for item in located:
        if item.finding.severity is Severity.INFO:
            break
        text = _clean(f"{item.finding.subject} {item.finding.code}")
        if text not in named:
            named.append(text)
    shown = "; ".join(named[:_FIRST_LINE_PROBLEMS])
    if len(named) > _FIRST_LINE_PROBLEMS:
        shown += f"; {len(named) - _FIRST_LINE_PROBLEMS} more"
    return shown


def render_nagios(report: AuditReport) -> tuple[str, int]:
    """The plugin output (ending in a newline) and the exit code: 0 OK, 1 WARNING,
    2 CRITICAL, 3 UNKNOWN (an error or a warning wins over unknown).

    Each service's days left carry the audit's thresholds (``[audit] warn_days`` and
    ``critical_days``) so graphs show how close it is."""
    status = report.exit_status
    located = located_findings(report)
    counts = severity_counts(item.finding for item in located)
    summaries = services(report)

    problems = [
        f"{counts[s]} {_COUNT_WORD[s]}{'s' if s is Severity.WARNING and counts[s] != 1 else ''}"
        for s in WORST_FIRST[:3]
        if counts[s]
    ]
    if problems:
        text = ", ".join(problems) + ": " + _problems(located)
    else:
        up = sum(s.up for s in summaries)
        site = len(site_results(report))
        checked = f", {site} site-wide results" if site else ""
        text = f"{len(report.endpoints)} endpoints, {up} up{checked}, no problems"
        if counts[Severity.INFO]:
            text += f" ({counts[Severity.INFO]} notes)"
    summary_perf = [f"'findings_{_COUNT_WORD[s]}'={counts[s]};;;0;" for s in WORST_FIRST] + [
        f"'endpoints'={len(report.endpoints)};;;0;",
        f"'duration'={_number(report.seconds)}s;;;0;",
    ]
    first = f"{PREFIX} {STATUS_WORD[status]} - {_clean(text)} | {' '.join(summary_perf)}"

    long_lines = [
        _clean(
            f"{item.finding.severity.value.upper()} {item.finding.code} "
            f"{item.where}: {item.finding.message}"
            + (f" (fix: {item.finding.fix})" if item.finding.fix else "")
        )
        for item in located
    ]
    if not long_lines:
        long_lines = [f"{len(summaries)} services on {len(report.endpoints)} endpoints audited"]
    thresholds = f"{report.warn_days};{report.critical_days}"
    days_perf = []
    for summary in summaries:
        days = "U" if summary.leaf_days is None else str(math.floor(summary.leaf_days))
        days_perf.append(f"{perf_label(summary.service + ' days')}={days};{thresholds};;")
    lines = [first, *long_lines]
    if days_perf:
        lines[-1] += " | " + days_perf[0]
        lines.extend(days_perf[1:])
    return "\n".join(lines) + "\n", status
