"""The audit benchmark's lab plan and verdict rules (the README's figures come from them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import audit_verdicts as verdicts
from bench.audit_lab import EXPECTED, LabEndpoint, nginx_config, plan, postfix_master_cf, zone


def _placed(endpoints: list[LabEndpoint]) -> list[LabEndpoint]:
    return [
        replace(e, port=20000 + e.index, cert=Path(f"/c/{e.index}.pem"), key=Path("/k"))
        for e in endpoints
    ]


def test_plan_has_the_classes_and_servers_the_issue_asks_for() -> None:
    endpoints = plan()
    assert len(endpoints) == 100
    assert Counter(e.protocol for e in endpoints) == {"https": 80, "imap": 10, "smtp": 10}
    assert Counter(e.tls for e in endpoints) == {"implicit": 80, "starttls": 20}
    kinds = Counter(e.kind for e in endpoints)
    assert kinds["good"] == 40
    assert all(kinds[k] == 10 for k in EXPECTED if k != "good")
    assert len({e.name for e in endpoints}) == len({e.address for e in endpoints}) == 100
    # Postfix and Dovecot do not staple: stapled classes live on nginx only.
    assert all(e.server == "nginx" for e in endpoints if e.staple != "none")
    assert {e.staple for e in endpoints if e.kind == "stapled-revoked"} == {"revoked"}
    assert all(e.crl_only for e in endpoints if e.kind == "revoked-crl")
    assert not any(e.crl_only for e in endpoints if e.kind == "revoked-ocsp")
    assert any(e.crl_only for e in endpoints if e.kind == "good")


def test_server_configs_give_each_endpoint_its_address_and_certificate() -> None:
    endpoints = _placed(plan())
    https = [e for e in endpoints if e.server == "nginx"]
    stapled = replace(https[0], staple_file=Path("/s/1.der"))
    config = nginx_config([stapled, *https[1:]], Path("/tmp/x"), 2)
    assert config.count(" ssl;") == 80
    assert f"listen {stapled.address}:{stapled.port} ssl;" in config
    assert config.count("ssl_stapling_file") == 1
    assert config.count("@SECLEVEL=0") == sum(1 for e in https if e.kind == "weak-key")
    smtp = [e for e in endpoints if e.server == "postfix"]
    master = postfix_master_cf(smtp)
    assert all(f"{e.address}:{e.port} inet" in master for e in smtp)
    assert master.count("smtpd_tls_chain_files=") == 10
    assert zone(endpoints).count(" IN A 127.0.10.") == 100


def _ours_report(endpoints: list[LabEndpoint]) -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    for e in endpoints:
        for code in e.expected:
            findings.append({"endpoint": e.label, "code": code, "severity": "critical"})
        findings.append({"endpoint": e.label, "code": "TLS-NO-STAPLE", "severity": "info"})
    return {"endpoints": [{"label": e.label} for e in endpoints], "findings": findings}


def test_ours_is_right_when_it_reports_exactly_the_expected_codes() -> None:
    endpoints = _placed(plan())
    report = _ours_report(endpoints)
    assert verdicts.score(endpoints, verdicts.ours(report, endpoints)).right == 100
    good = [e for e in endpoints if e.kind == "good"][1]
    # An extra warning on a good endpoint, about its host:port: wrong.
    report["findings"].append(
        {
            "endpoint": None,
            "subject": f"{good.name}:{good.port}",
            "code": "X",
            "severity": "warning",
        }
    )
    # An endpoint missing from the report: wrong.
    report["endpoints"] = report["endpoints"][1:]
    missing = endpoints[0]
    report["findings"] = [f for f in report["findings"] if f.get("endpoint") != missing.label]
    score = verdicts.score(endpoints, verdicts.ours(report, endpoints))
    assert score.right == 98
    assert score.wrong[good.name] == ([], ["X"])
    assert score.wrong[missing.name][1] == [verdicts.NO_ANSWER]


def _sslyze_result(e: LabEndpoint, error: str | None, staple: str | None) -> dict[str, Any]:
    validation = {
        "trust_store": {"path": "/root.pem"},
        "was_validation_successful": error is None,
        "validation_error": error,
    }
    other = {"trust_store": {"path": "/mozilla.pem"}, "was_validation_successful": False}
    deployment = {
        "path_validation_results": [other, validation],
        "ocsp_response": {"certificate_status": staple} if staple else None,
    }
    return {
        "server_location": {"hostname": e.name, "port": e.port},
        "scan_status": "COMPLETED",
        "scan_result": {
            "certificate_info": {
                "status": "COMPLETED",
                "result": {"certificate_deployments": [deployment]},
            }
        },
    }


def test_sslyze_verdicts_come_from_the_supplied_ca_and_the_staple(tmp_path: Path) -> None:
    endpoints = _placed(plan())
    by_kind = {e.kind: e for e in endpoints}
    results = [
        _sslyze_result(by_kind["good"], None, "GOOD"),
        _sslyze_result(by_kind["expired"], "cert is not valid at validation time (x)", None),
        _sslyze_result(
            by_kind["wrong-name"], "leaf certificate has no matching subjectAltName", None
        ),
        _sslyze_result(by_kind["weak-key"], None, None),
        _sslyze_result(by_kind["stapled-revoked"], None, "REVOKED"),
        _sslyze_result(by_kind["revoked-crl"], "candidates exhausted", None),
    ]
    path = tmp_path / "sslyze.json"
    path.write_text(__import__("json").dumps({"server_scan_results": results}))
    found = verdicts.sslyze([path], endpoints, Path("/root.pem"))
    assert found[by_kind["good"].index] == frozenset()
    assert found[by_kind["expired"].index] == {verdicts.EXPIRED}
    assert found[by_kind["wrong-name"].index] == {verdicts.NAME}
    assert found[by_kind["weak-key"].index] == frozenset()  # no verdict on key size
    assert found[by_kind["stapled-revoked"].index] == {verdicts.REVOKED}
    assert found[by_kind["revoked-crl"].index] == {verdicts.UNTRUSTED}
    score = verdicts.score(endpoints, found)
    assert score.per_kind["weak-key"] == (0, 10)
    assert score.per_kind["stapled-revoked"] == (1, 10)
