"""The one result type of the lint: findings, predictions and the report that holds them.

Rules return values of these types and nothing else; the terminal and JSON renderers and the
exit status only format them. Codes are stable (``S1``…, ``P1``…): docs/lint.md explains each one
and monitoring may match on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(Enum):
    """How bad a finding is; the order matters for the exit status."""

    INFO = "info"
    WARNING = "warning"
    FATAL = "fatal"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "fatal": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    """One problem: what is wrong, why it matters, and the corrected line(s) to paste."""

    severity: Severity
    code: str
    subject: str
    message: str
    fix: str
    file: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
            "file": self.file,
            "line": self.line,
        }


class Outcome(Enum):
    """What happens to one daemon, client or listener when the MTA starts."""

    STARTS = "starts"
    BINDS = "binds"
    FATAL_AT_STARTUP = "fatal at start-up"
    MTA_EXITS = "MTA exits after ~50 s"
    MTA_EXITS_AT_ONCE = "MTA exits at once"
    SILENTLY_DISABLED = "silently disabled"
    IPV4_REFUSED = "IPv4 refused"
    DELIVERY_FAILS = "delivery fails"
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class Prediction:
    """The predicted fate of one daemon/client/listener, with the detail that explains it."""

    subject: str
    kind: str
    outcome: Outcome
    detail: str
    file: str
    line: int

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.BINDS, Outcome.STARTS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "file": self.file,
            "line": self.line,
        }


@dataclass(frozen=True)
class LintReport:
    """Everything one lint run found, in the order the configuration declares things."""

    mta: str
    target: str
    predictions: tuple[Prediction, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def worst(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)

    @property
    def exit_status(self) -> int:
        """0 clean (or only informational), 1 warnings, 2 at least one fatal finding."""
        worst = self.worst
        return 0 if worst is None else worst.rank

    def to_dict(self) -> dict[str, Any]:
        return {
            "mta": self.mta,
            "target": self.target,
            "notes": list(self.notes),
            "predictions": [p.to_dict() for p in self.predictions],
            "findings": [f.to_dict() for f in self.findings],
            "exit_status": self.exit_status,
        }
