"""The audit's checks: one module per check, each a pure function over observations.

:data:`CHECKS` maps each check's name to its implementation, in the order reports list them;
:data:`CODES` explains every code any of them can report (docs/audit.md is checked against it).
Every check has the signature :data:`Check`: all observations of one service (``host:port``,
every address) and a :class:`CheckContext` in, :class:`~mailwarden.audit.model.CheckResult`
values out. :func:`run_checks` groups observations by service and runs the chosen checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType

from mailwarden.audit.checks import (
    auth,
    chain,
    dualstack,
    expiry,
    handshake,
    keys,
    name,
    protocols,
    revocation,
    stapling,
)
from mailwarden.audit.checks.base import (
    DEFAULT_CRITICAL_DAYS,
    DEFAULT_WARN_DAYS,
    SYSTEM_BUNDLE,
    Check,
    CheckContext,
    fingerprint,
    load_trust,
)
from mailwarden.audit.checks.certificates import leaf_and_issuer
from mailwarden.audit.checks.expiry import certificate_infos
from mailwarden.audit.model import CheckResult, Observation

_MODULES: tuple[ModuleType, ...] = (
    handshake,
    chain,
    name,
    expiry,
    keys,
    protocols,
    revocation,
    stapling,
    dualstack,
    auth,
)

CHECKS: dict[str, Check] = {
    handshake.NAME: handshake.check,
    chain.NAME: chain.check,
    name.NAME: name.check,
    expiry.NAME: expiry.check,
    keys.NAME: keys.check,
    protocols.NAME: protocols.check,
    revocation.NAME: revocation.check,
    stapling.NAME: stapling.check,
    dualstack.NAME: dualstack.check,
    auth.NAME: auth.check,
}
"""Check name → implementation, in report order."""

CHECK_CODES: dict[str, tuple[str, ...]] = {module.NAME: tuple(module.CODES) for module in _MODULES}
"""Check name → the codes it defines. The stapling check also reports revocation codes about
the staple it judged (``TLS-REVOKED``, ``TLS-STAPLE-INVALID``, ``TLS-OCSP-UNKNOWN``)."""

CODES: dict[str, str] = {code: text for module in _MODULES for code, text in module.CODES.items()}
"""Every code → what it means, why it matters, how to fix it."""


def run_checks(
    observations: Sequence[Observation],
    context: CheckContext,
    names: Iterable[str] | None = None,
) -> list[CheckResult]:
    """Run the checks called ``names`` (all by default, always in :data:`CHECKS` order) on
    every service of ``observations``; services in the order they first appear."""
    wanted = set(CHECKS) if names is None else set(names)
    unknown = wanted - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(sorted(unknown))}")
    services: dict[str, list[Observation]] = {}
    for observation in observations:
        services.setdefault(observation.endpoint.service, []).append(observation)
    results: list[CheckResult] = []
    for grouped in services.values():
        for check_name, check in CHECKS.items():
            if check_name in wanted:
                results.extend(check(grouped, context))
    return results


__all__ = [
    "CHECKS",
    "CHECK_CODES",
    "CODES",
    "DEFAULT_CRITICAL_DAYS",
    "DEFAULT_WARN_DAYS",
    "SYSTEM_BUNDLE",
    "Check",
    "CheckContext",
    "certificate_infos",
    "fingerprint",
    "leaf_and_issuer",
    "load_trust",
    "run_checks",
]
