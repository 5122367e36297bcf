"""Is the leaf revoked? The verdict is fetched before the checks run (OCSP, else the CRL: see
:mod:`mailwarden.audit.revocation`) and handed in through :attr:`CheckContext.revocation`, keyed
by the leaf's SHA-256 fingerprint, so that this check stays pure like the others.

An address whose leaf has no verdict in the context (the lookup was not run, or the leaf's
issuer is unknown, which the chain check reports) gets no result rather than a false "ok".
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwarden.audit import revocation as lookup
from mailwarden.audit.checks.base import CheckContext
from mailwarden.audit.checks.certificates import parse_chain
from mailwarden.audit.model import CheckResult, Observation

NAME = "revocation"

CODES: dict[str, str] = dict(lookup.CODES)
"""Every code a revocation verdict can give (written with the lookup, which knows them)."""


def _judge(observation: Observation, context: CheckContext) -> CheckResult | None:
    if not observation.ok:
        return None
    leaf = parse_chain(observation.chain).leaf
    if leaf is None:
        return None
    verdict = context.revocation.get(leaf.sha256)
    if verdict is None:
        return None
    findings = lookup.revocation_findings(verdict, observation.endpoint)
    return CheckResult(NAME, observation.endpoint, tuple(findings), verdict.detail)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address whose leaf has a verdict in the context."""
    results = (_judge(observation, context) for observation in observations)
    return [result for result in results if result is not None]
