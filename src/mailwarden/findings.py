"""The result type of every check that looks at a live deployment (``dns check``, ``probe``).

A check returns :class:`Finding` values and nothing else; text, JSON and monitoring renderers only
format them, and the exit status is derived from the worst one. Codes are stable (``DNS-MISSING``,
``PROBE-TLS``…): docs/discovery.md explains each one, and monitoring may match on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Severity(Enum):
    """How bad a finding is. ``rank`` orders them (worst highest); ``exit_code`` is what a
    monitoring system reads (the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL,
    3 UNKNOWN)."""

    INFO = "info"
    UNKNOWN = "unknown"
    """The check could not tell (a responder unreachable, no IPv6 route from here)."""
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def exit_code(self) -> int:
        return _EXIT[self]


_RANK = {Severity.INFO: 0, Severity.UNKNOWN: 1, Severity.WARNING: 2, Severity.ERROR: 3}
_EXIT = {Severity.INFO: 0, Severity.UNKNOWN: 3, Severity.WARNING: 1, Severity.ERROR: 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: what is wrong, where, and what to do about it."""

    severity: Severity
    code: str
    subject: str
    """The DNS name, URL or host:port the finding is about."""
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


def worst(findings: Iterable[Finding]) -> Severity:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.INFO)


def exit_status(findings: Iterable[Finding]) -> int:
    """0 nothing worse than information, 1 warnings, 2 errors, 3 only "could not tell"
    (an error or a warning wins over unknown, as monitoring plugins do)."""
    return worst(findings).exit_code
