"""The audit as JSON for programs: the schema is ``docs/audit.schema.json``, explained field by
field in ``docs/audit.md`` ("JSON report").

``schema`` and ``version`` come first so a reader can refuse a document it does not know; the
version (:data:`~mailwarden.audit.model.SCHEMA_VERSION`) rises only when a field changes meaning
or goes away, never when one is added.
"""

from __future__ import annotations

import json
from typing import Any

from mailwarden.audit.model import SCHEMA_VERSION, AuditReport, Endpoint, Observation
from mailwarden.audit.report.summary import (
    STATUS_WORD,
    located_findings,
    observations,
    severity_counts,
)

SCHEMA_NAME = "mailwarden-audit"


def _observation(observation: Observation | None) -> dict[str, Any] | None:
    if observation is None:
        return None
    return {
        "ok": observation.ok,
        "error": observation.error,
        "error_kind": observation.error_kind,
        "tls_version": observation.tls_version,
        "cipher": observation.cipher,
        "chain_length": len(observation.chain),
        "stapled": observation.staple is not None,
        "capabilities_before_tls": list(observation.capabilities_before_tls),
        "mechanisms_before_tls": list(observation.mechanisms_before_tls),
        "mechanisms": list(observation.mechanisms),
        "plaintext_auth_before_tls": list(observation.plaintext_auth_before_tls),
        "legacy_versions": list(observation.legacy_versions),
        "ms": round(observation.ms, 1),
    }


def _endpoint(endpoint: Endpoint, observation: Observation | None) -> dict[str, Any]:
    return {
        "label": endpoint.label,
        "service": endpoint.service,
        "family": endpoint.family,
        **endpoint.to_dict(),
        "observation": _observation(observation),
    }


def to_json(report: AuditReport) -> dict[str, Any]:
    """The whole report as plain JSON values (``json.dumps`` takes it as it is)."""
    seen = observations(report)
    located = located_findings(report)
    counts = severity_counts(item.finding for item in located)
    status = report.exit_status
    return {
        "schema": SCHEMA_NAME,
        "version": SCHEMA_VERSION,
        "started": report.started,
        "seconds": round(report.seconds, 3),
        "site": report.site,
        "exit_status": status,
        "status": STATUS_WORD[status].lower(),
        "warn_days": report.warn_days,
        "critical_days": report.critical_days,
        "counts": {severity.value: number for severity, number in counts.items()},
        "notes": list(report.notes),
        "endpoints": [_endpoint(e, seen.get(e)) for e in report.endpoints],
        "results": [result.to_dict() for result in report.results],
        "findings": [
            {
                "check": item.check,
                "endpoint": item.endpoint.label if item.endpoint is not None else None,
                **item.finding.to_dict(),
            }
            for item in located
        ],
        "certificates": {
            label: [info.to_dict() for info in chain]
            for label, chain in report.certificates.items()
        },
    }


def json_text(report: AuditReport) -> str:
    """:func:`to_json` as indented UTF-8 text with a final newline (``--format json``)."""
    return json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"
