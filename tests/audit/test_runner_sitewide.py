"""The runner and the site-wide checks: chosen alone they connect to nothing; a check that fails
or overruns the deadline is one unknown finding, and the others' results stand."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden.audit.model import CheckResult
from mailwarden.audit.runner import AuditOptions, check_names, run_audit
from mailwarden.audit.sitewide import SITE_CHECKS, SiteContext, site_result
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.errors import InputError
from mailwarden.findings import Finding, Severity
from mailwarden.site.load import parse_site
from tests.fixtures.knot import silent_dns

SITE = """
primary_domain = "example.test"
[organisation]
name = "Runner test"
short_name = "RT"
[[services.main.imap]]
host = "imap.example.test"
[[services.main.smtp]]
host = "smtp.example.test"
[domains."example.test"]
services = "main"
aliases = ["alias.test"]
"""


def _module(name: str, run: object, *, after_scan: bool = False) -> types.ModuleType:
    module = types.ModuleType(f"test_{name}")
    module.NAME = name  # type: ignore[attr-defined]
    module.AFTER_SCAN = after_scan  # type: ignore[attr-defined]
    module.CODES = {}  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    return module


def _audit(only: str, resolver: Resolver, deadline: float = 30.0) -> list[CheckResult]:
    site = parse_site(SITE, source="site.toml", base_dir=Path("."))
    options = AuditOptions.from_site(site, only=check_names(only), deadline=deadline, timeout=1.0)
    report = asyncio.run(run_audit(site, "site.toml", resolver, options))
    assert report.endpoints == ()
    assert report.observations == ()
    assert report.general == ()
    return list(report.results)


async def _per_domain(context: SiteContext) -> list[CheckResult]:
    return [site_result("spf", domain, detail=f"looked at {domain}") for domain in context.domains]


async def _broken(context: SiteContext) -> list[CheckResult]:
    raise RuntimeError("a fault in the check")


async def _slow(context: SiteContext) -> list[CheckResult]:
    await asyncio.sleep(60)
    return []


async def _dmarc(context: SiteContext) -> list[CheckResult]:
    finding = Finding(Severity.WARNING, "DMARC-NONE", "example.test", "no DMARC record")
    return [site_result("dmarc", "example.test", [finding])]


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    # A name server that never answers: any endpoint look-up would be a timeout finding.
    with silent_dns() as address:
        yield Resolver(parse_nameserver(address), timeout=0.5)


def test_site_wide_checks_alone_connect_to_no_endpoint(
    monkeypatch: pytest.MonkeyPatch, resolver: Resolver
) -> None:
    monkeypatch.setitem(SITE_CHECKS, "spf", _module("spf", _per_domain))
    results = _audit("spf", resolver)
    assert [(r.check, r.endpoint, r.subject, r.detail) for r in results] == [
        ("spf", None, "example.test", "looked at example.test"),
        ("spf", None, "alias.test", "looked at alias.test"),
    ]


def test_a_failing_check_is_one_unknown_finding_and_the_others_stand(
    monkeypatch: pytest.MonkeyPatch, resolver: Resolver
) -> None:
    monkeypatch.setitem(SITE_CHECKS, "spf", _module("spf", _broken))
    monkeypatch.setitem(SITE_CHECKS, "dmarc", _module("dmarc", _dmarc))
    results = _audit("spf,dmarc", resolver)
    assert [r.check for r in results] == ["spf", "dmarc"]
    (failed,) = results[0].findings
    assert (failed.severity, failed.code) == (Severity.UNKNOWN, "AUDIT-CHECK-FAILED")
    assert "RuntimeError: a fault in the check" in failed.message
    assert results[1].findings[0].code == "DMARC-NONE"


def test_a_check_past_the_deadline_is_cut_short(
    monkeypatch: pytest.MonkeyPatch, resolver: Resolver
) -> None:
    monkeypatch.setitem(SITE_CHECKS, "spf", _module("spf", _slow))
    results = _audit("spf", resolver, deadline=0.5)
    (failed,) = results[0].findings
    assert failed.code == "AUDIT-CHECK-FAILED"
    assert "deadline" in failed.message


def test_only_knows_the_site_wide_names() -> None:
    assert check_names("spf,expiry,antivirus") == {"spf", "expiry", "antivirus"}
    with pytest.raises(InputError, match=r"known: handshake, .*, spf, dkim"):
        check_names("spf,nonsense")
