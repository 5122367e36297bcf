"""What each tool said about each lab endpoint, as a set of verdict codes, and whether it is right.

All three tools are judged by one rule: an endpoint's verdict is right when the problems the tool
reports for it are exactly the lab's expected codes for its class (``bench.audit_lab.EXPECTED``):
nothing missing, nothing extra. Notes do not count as problems.

- ours: the codes of the JSON report's findings of severity warning, critical or unknown, per
  endpoint label (a finding about the whole ``host:port`` counts for each of its addresses);
- sslyze ``--certinfo``: path validation against the supplied CA file ("not valid at validation
  time" → expired, "no matching subjectAltName" → wrong name, any other failure → untrusted) and
  the stapled OCSP response when it says revoked. sslyze reports the leaf's key size but makes
  no verdict on it, and fetches neither OCSP nor CRLs;
- testssl.sh: the severities of its JSON findings about expiry, name, trust, key size and
  revocation (stapled, OCSP, CRL), mapped to the same codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.audit_lab import KINDS, Kind, LabEndpoint

PROBLEM_SEVERITIES = frozenset({"critical", "error", "warning", "unknown"})
SHARED: frozenset[str] = frozenset()
"""Codes every lab endpoint may carry whatever its class (none: the lab is built so that a good
endpoint has nothing to report but notes)."""

EXPIRED, NAME, UNTRUSTED, WEAK, REVOKED = (
    "TLS-EXPIRED",
    "TLS-NAME-MISMATCH",
    "TLS-UNTRUSTED",
    "TLS-WEAK-KEY",
    "TLS-REVOKED",
)
NO_ANSWER = "NO-RESULT"
"""The tool gave no result for the endpoint at all."""


@dataclass(frozen=True)
class Score:
    right: int
    total: int
    per_kind: dict[Kind, tuple[int, int]]
    """Right and total per class."""
    wrong: dict[str, tuple[list[str], list[str]]]
    """Endpoint name → (codes expected, codes reported), for the wrong ones."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "right": self.right,
            "total": self.total,
            "per_class": {k: {"right": r, "total": t} for k, (r, t) in self.per_kind.items()},
            "wrong": {name: {"expected": e, "reported": r} for name, (e, r) in self.wrong.items()},
        }


def score(endpoints: Sequence[LabEndpoint], verdicts: Mapping[int, frozenset[str]]) -> Score:
    per_kind: dict[Kind, list[int]] = {k: [0, 0] for k in KINDS}
    wrong: dict[str, tuple[list[str], list[str]]] = {}
    for endpoint in endpoints:
        got = verdicts.get(endpoint.index, frozenset({NO_ANSWER})) - SHARED
        counts = per_kind[endpoint.kind]
        counts[1] += 1
        if got == endpoint.expected:
            counts[0] += 1
        else:
            wrong[endpoint.name] = (sorted(endpoint.expected), sorted(got))
    right = sum(r for r, _ in per_kind.values())
    return Score(
        right,
        len(endpoints),
        {k: (r, t) for k, (r, t) in per_kind.items() if t},
        wrong,
    )


# ------------------------------------------------------------------------------ ours


def ours(report: Mapping[str, Any], endpoints: Sequence[LabEndpoint]) -> dict[int, frozenset[str]]:
    """Per endpoint index, the problem codes of our JSON report (``--format json``)."""
    by_label = {e.label: e for e in endpoints}
    by_service = {f"{e.name}:{e.port}": e for e in endpoints}
    seen = {
        by_label[item["label"]].index for item in report["endpoints"] if item["label"] in by_label
    }
    codes: dict[int, set[str]] = {index: set() for index in seen}
    for item in report["findings"]:
        if item["severity"] not in PROBLEM_SEVERITIES:
            continue
        where = item.get("endpoint") or item.get("subject") or ""
        endpoint = by_label.get(where) or by_service.get(where)
        if endpoint is not None:
            codes.setdefault(endpoint.index, set()).add(item["code"])
    return {index: frozenset(found) for index, found in codes.items()}


def shared_codes(verdicts: Mapping[int, frozenset[str]]) -> frozenset[str]:
    """Codes found on every endpoint (what a lab-wide artefact would look like)."""
    sets = list(verdicts.values())
    return frozenset.intersection(*sets) if sets else frozenset()


# ------------------------------------------------------------------------------ sslyze


def _sslyze_codes(result: Mapping[str, Any], ca_file: str) -> frozenset[str]:
    if result.get("scan_status") != "COMPLETED":
        return frozenset({NO_ANSWER})
    attempt = (result.get("scan_result") or {}).get("certificate_info") or {}
    if attempt.get("status") != "COMPLETED":
        return frozenset({NO_ANSWER})
    deployments = attempt["result"]["certificate_deployments"]
    if not deployments:
        return frozenset({NO_ANSWER})
    codes: set[str] = set()
    deployment = deployments[0]
    for validation in deployment["path_validation_results"]:
        if validation["trust_store"].get("path") != ca_file:
            continue  # the built-in stores do not know the lab's root
        if not validation["was_validation_successful"]:
            error = validation.get("validation_error") or ""
            if "not valid at validation time" in error:
                codes.add(EXPIRED)
            elif "no matching subjectAltName" in error:
                codes.add(NAME)
            else:
                codes.add(UNTRUSTED)
    staple = deployment.get("ocsp_response") or {}
    if str(staple.get("certificate_status", "")).upper() == "REVOKED":
        codes.add(REVOKED)
    return frozenset(codes)


def sslyze(
    files: Iterable[Path], endpoints: Sequence[LabEndpoint], ca_file: Path
) -> dict[int, frozenset[str]]:
    """Per endpoint index, the verdicts of sslyze's JSON outputs (``--json_out``)."""
    by_target = {(e.name, e.port): e for e in endpoints}
    verdicts: dict[int, frozenset[str]] = {}
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        for result in document.get("server_scan_results", []):
            location = result["server_location"]
            endpoint = by_target.get((location["hostname"], int(location["port"])))
            if endpoint is not None:
                verdicts[endpoint.index] = _sslyze_codes(result, str(ca_file))
    return verdicts


# ------------------------------------------------------------------------------ testssl.sh

_TESTSSL_BAD = frozenset({"LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN"})


def _testssl_code(finding_id: str, severity: str, text: str) -> str | None:
    lowered = text.lower()
    bad = severity in _TESTSSL_BAD
    if finding_id.startswith("cert_expirationStatus") and "expired" in lowered:
        return EXPIRED
    if finding_id.startswith("cert_keySize") and bad:
        return WEAK
    revocation = ("cert_ocspRevoked", "cert_crlRevoked", "OCSP_stapling")
    if finding_id.startswith(revocation) and bad and lowered.startswith("revoked"):
        return REVOKED  # "not revoked" is severity OK
    if finding_id.startswith("cert_trust") and severity in _TESTSSL_BAD:
        return NAME
    if finding_id.startswith("cert_chain_of_trust") and severity in _TESTSSL_BAD:
        return EXPIRED if "expired" in lowered else UNTRUSTED
    return None


def testssl(path: Path, endpoints: Sequence[LabEndpoint]) -> dict[int, frozenset[str]]:
    """Per endpoint index, the verdicts in testssl.sh's flat JSON (``--jsonfile``) of a mass run:
    one list of findings, each with ``ip`` (``name/address``) and ``port``."""
    by_target = {(e.address, e.port): e for e in endpoints}
    verdicts: dict[int, set[str]] = {}
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    items = json.loads(text) if text.startswith("[") else []
    for item in items:
        address = str(item.get("ip", "")).rsplit("/", 1)[-1]
        try:
            endpoint = by_target.get((address, int(item.get("port", 0))))
        except ValueError:
            endpoint = None
        if endpoint is None:
            continue
        codes = verdicts.setdefault(endpoint.index, set())
        code = _testssl_code(
            str(item.get("id", "")), str(item.get("severity", "")), str(item.get("finding", ""))
        )
        if code is not None:
            codes.add(code)
    return {index: frozenset(codes) for index, codes in verdicts.items()}
