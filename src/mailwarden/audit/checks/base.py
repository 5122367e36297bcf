"""What every check is given and how it answers.

A check is a pure function: the observations of one service (``host:port``, every address, so
that the dual-stack check can compare address families) and a :class:`CheckContext` in, a list
of :class:`~mailwarden.audit.model.CheckResult` out. Per-address checks return one result per
observation they could judge and nothing for an address they had nothing to judge on (no TLS
session, no readable certificate): an absent result never claims "ok".
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

from mailwarden.audit.model import CheckResult, Endpoint, Observation
from mailwarden.findings import Finding, Severity

if TYPE_CHECKING:
    from mailwarden.audit.revocation import Revocation

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""Debian's trust store as one PEM file (package ca-certificates): what mail clients on the
auditing host trust."""

MAX_TRUST_FILE = 16 * 1024 * 1024
"""A CA file larger than this is not a CA file."""

DEFAULT_WARN_DAYS = 30
DEFAULT_CRITICAL_DAYS = 14


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex without separators: the key of
    :attr:`CheckContext.revocation` and :attr:`CertificateInfo.sha256`."""
    return hashlib.sha256(der).hexdigest()


def load_trust(*files: Path | None) -> tuple[x509.Certificate, ...]:
    """The trusted certificates of PEM ``files``, in file order; None entries are skipped, and
    without any file the system bundle is read (so ``load_trust(ca_file_or_none)`` trusts the
    site's CA file when given, else the system).

    Pass :data:`SYSTEM_BUNDLE` and the site's CA file together to trust both public and internal
    certificates. A file that cannot be read or holds no certificate raises :class:`ValueError`
    with a one-line message naming it.
    """
    certificates: list[x509.Certificate] = []
    given = [path for path in files if path is not None]
    for path in given or [SYSTEM_BUNDLE]:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_TRUST_FILE + 1)
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the CA file: {exc.strerror or exc}") from None
        if len(data) > MAX_TRUST_FILE:
            raise ValueError(f"{path}: larger than {MAX_TRUST_FILE // 1024 // 1024} MiB")
        try:
            with warnings.catch_warnings():
                # Some long-lived roots carry a non-positive serial number; trusting them is the
                # system's decision, not a reason to warn on every run.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certificates.extend(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise ValueError(f"{path}: no readable PEM certificates ({exc})") from None
    return tuple(certificates)


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the checks know beyond the observations: the time, whom to trust, the limits."""

    now: datetime
    """The moment certificates are judged at (naive values are taken as UTC)."""
    trust: tuple[x509.Certificate, ...]
    """Trusted roots (and any intermediates an internal CA file holds): :func:`load_trust`."""
    warn_days: int = DEFAULT_WARN_DAYS
    critical_days: int = DEFAULT_CRITICAL_DAYS
    revocation: Mapping[str, Revocation] = field(default_factory=dict)
    """Per leaf :func:`fingerprint`, what the revocation lookup found (fetched by the runner
    before the checks run, so that the checks stay pure)."""
    store: Store | None = field(init=False, repr=False, compare=False)
    """:attr:`trust` for ``cryptography``'s verifier; None when nothing is trusted."""

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            object.__setattr__(self, "now", self.now.replace(tzinfo=UTC))
        object.__setattr__(self, "trust", tuple(self.trust))
        object.__setattr__(self, "store", Store(list(self.trust)) if self.trust else None)


Check = Callable[[Sequence[Observation], CheckContext], list[CheckResult]]
"""The signature of every check: all observations of one service in, results out."""


def finding(
    severity: Severity, code: str, endpoint: Endpoint, message: str, fix: str = ""
) -> Finding:
    """A finding about one address of a service (subject: ``host:port (address)``)."""
    return Finding(severity, code, endpoint.label, message, fix)


def listed(items: Sequence[str], limit: int = 5) -> str:
    """``a, b and c``; at most ``limit`` items, then ``and N more``."""
    shown = list(items[:limit])
    rest = len(items) - len(shown)
    if rest:
        return ", ".join(shown) + f" and {rest} more"
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + f" and {shown[-1]}"


def days_text(days: float) -> str:
    """Whole days for people: ``5 days``, ``1 day``, ``0 days`` (less than one left)."""
    whole = int(days) if days >= 0 else -int(-days)
    return f"{whole} day" if abs(whole) == 1 else f"{whole} days"
