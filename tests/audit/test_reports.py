"""Every audit report from one hand-built audit (tests/audit/sample_report.py).

The expectations are written out from that audit: which finding is worst, how many days each
service has left, which cells of the grid are red. The HTML page is also opened in Debian's
headless Chromium: nothing may leave the page, axe (WCAG 2.1 AA) must find nothing serious, and
screenshots go to ``test-artifacts/audit-report/``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Browser, Route, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families
from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style

from mailwarden.audit.model import AuditReport, CertificateInfo, CheckResult
from mailwarden.audit.report.html import render_html
from mailwarden.audit.report.json import json_text, to_json
from mailwarden.audit.report.nagios import perf_label, render_nagios
from mailwarden.audit.report.prometheus import render_prometheus, write_prometheus
from mailwarden.audit.report.text import render_text
from mailwarden.findings import Finding, Severity
from mailwarden.findings_console import SEVERITY_STYLE
from tests.audit import sample_report as sample
from tests.audit.schema_check import errors
from tests.fixtures.paths import ROOT

SCHEMA = json.loads((ROOT / "docs" / "audit.schema.json").read_text(encoding="utf-8"))
WORST_FIRST = (
    sample.AAAA_DOWN,
    sample.EXPIRED,
    sample.PLAIN_AUTH,
    sample.NO_ADDRESS,  # general findings come first among equals
    sample.EXPIRES_SOON,
    sample.LEGACY,
    sample.OCSP_UNREACHABLE,
    sample.MECHANISMS,
)
HOSTILE_MESSAGE = '<script>alert("x")</script> & it\'s [bold]not markup[/] | next'
HOSTILE_SUBJECT = 'CN=evil"<script>x</script>,O=back\\slash\nnewline'


def _parse(page: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(page)


def _nodes(tree: lxml.html.HtmlElement, path: str) -> list[lxml.html.HtmlElement]:
    found = tree.xpath(path)
    assert isinstance(found, list)
    return [node for node in found if isinstance(node, lxml.html.HtmlElement)]


def _strings(tree: lxml.html.HtmlElement, path: str) -> list[str]:
    found = tree.xpath(path)
    assert isinstance(found, list)
    return [str(item) for item in found]


def _string(tree: lxml.html.HtmlElement, path: str) -> str:
    return str(tree.xpath(f"string({path})"))


@pytest.fixture
def report() -> AuditReport:
    return sample.sample_report()


def _hostile_report() -> AuditReport:
    report = sample.sample_report()
    finding = Finding(
        Severity.ERROR, "TLS-NAME", "imap.example.edu:993", HOSTILE_MESSAGE, "<b>x</b>"
    )
    evil = CertificateInfo(
        HOSTILE_SUBJECT, "CN=<i>issuer</i>", "2027-01-01T00:00:00+00:00", 27.5,
        "9" * 64, "RSA 2048", "sha256", 0,
    )  # fmt: skip
    certificates = dict(report.certificates)
    certificates[sample.IMAPS_4.label] = (evil, sample.R11)
    return replace(
        report,
        results=(*report.results, CheckResult("name", sample.IMAPS_4, (finding,))),
        certificates=certificates,
    )


# --- text ---------------------------------------------------------------------------------


def _text(report: AuditReport, *, colour: bool = False) -> str:
    console = Console(
        width=80,
        file=io.StringIO(),
        record=True,
        force_terminal=colour,
        color_system="standard" if colour else None,
    )
    render_text(report, console)
    return console.export_text(styles=colour)


def test_text_lists_findings_worst_first_each_with_its_fix(report: AuditReport) -> None:
    lines = _text(report).splitlines()
    headings = [
        i for i, line in enumerate(lines) if re.match(r"(error|warning|unknown|info) ", line)
    ]
    assert [lines[i] for i in headings] == [
        f"{f.severity.value} {f.code} {f.subject}" for f in WORST_FIRST
    ]
    for index, finding in zip(headings, WORST_FIRST, strict=True):
        assert lines[index + 1] == f"    {finding.message}"
        if finding.fix:
            assert lines[index + 2] == f"    fix: {finding.fix}"
        else:
            assert not lines[index + 2].startswith("    fix:")


def test_text_summarises_each_service_in_80_columns(report: AuditReport) -> None:
    lines = _text(report).splitlines()
    start = lines.index("Services")
    v4v6 = "{}, 2001:db8:10::{}".format
    expected = {
        "imap.example.edu:993": ("IMAP", "warning", "leaf 20 d left", v4v6("192.0.2.10", 10)),
        "imap.example.edu:143": ("IMAP", "error", "leaf 20 d left", "192.0.2.10"),
        # its only other finding is a note: the service is a warning, not an "info"
        "smtp.example.edu:587": ("submission", "warning", "leaf 85 d left", v4v6("192.0.2.20", 20)),
        "mx1.example.edu:25": ("MX", "error", "leaf 48 d left", v4v6("192.0.2.25", 25)),
        "autoconfig.example.edu:443": (
            "HTTPS",
            "unknown",
            "leaf 200 d left",
            v4v6("192.0.2.80", 80),
        ),
        "mail.physics.example.org:993": ("IMAP", "error", "leaf expired 4 d ago", "198.51.100.7"),
    }
    rows = lines[start + 1 : start + 1 + 2 * len(expected)]
    for (service, (kind, state, days, addresses)), line, below in zip(
        expected.items(), rows[::2], rows[1::2], strict=True
    ):
        assert line.split() == [service, kind, state, *days.split()]
        assert below.strip() == addresses
    assert all(len(line) <= 80 for line in rows)
    assert lines[-1] == "3 errors, 3 warnings, 1 unknown, 1 note · 10 endpoints · 3.2 s"


def test_text_colours_come_from_the_shared_severity_table(report: AuditReport) -> None:
    output = _text(report, colour=True)
    for severity in Severity:
        start = Style.parse(SEVERITY_STYLE[severity]).render(
            severity.value, color_system=ColorSystem.STANDARD
        )
        assert start in output, severity


def test_text_without_findings(report: AuditReport) -> None:
    clean = replace(report, results=(), general=())
    lines = _text(clean).splitlines()
    assert "✓ no findings" in lines
    assert lines[-1] == "0 errors, 0 warnings, 0 unknown, 0 notes · 10 endpoints · 3.2 s"


# --- JSON ---------------------------------------------------------------------------------


def test_json_report_is_valid_against_the_shipped_schema(report: AuditReport) -> None:
    document = json.loads(json_text(report))
    assert errors(document, SCHEMA, SCHEMA) == []
    assert document == to_json(report)


def test_the_schema_check_catches_a_broken_report(report: AuditReport) -> None:
    document = to_json(report)
    broken = json.loads(json.dumps(document))
    del broken["findings"][0]["fix"]
    broken["endpoints"][0]["port"] = "993"
    broken["endpoints"][6]["observation"]["error_kind"] = "sunspots"
    broken["certificates"][sample.IMAPS_4.label][0]["position"] = -1
    broken["surprise"] = True
    found = errors(broken, SCHEMA, SCHEMA)
    assert len(found) == 5, found
    assert any("'fix' is missing" in line for line in found)
    assert any("$.endpoints[0].port" in line for line in found)
    assert any("sunspots" in line for line in found)
    assert any("position: -1 < 0" in line for line in found)
    assert any("$.surprise" in line for line in found)


def test_json_fields(report: AuditReport) -> None:
    document = to_json(report)
    assert (document["schema"], document["version"]) == ("mailwarden-audit", 2)
    assert (document["exit_status"], document["status"]) == (2, "critical")
    assert document["started"] == "2026-12-04T09:30:00+00:00"
    assert (document["seconds"], document["warn_days"], document["critical_days"]) == (3.2, 30, 14)
    assert document["counts"] == {"error": 3, "warning": 3, "unknown": 1, "info": 1}
    assert [f["code"] for f in document["findings"]] == [f.code for f in WORST_FIRST]
    general = document["findings"][3]
    assert (general["code"], general["check"], general["endpoint"]) == (
        "ENDPOINT-NO-ADDRESS",
        None,
        None,
    )
    assert document["findings"][0]["endpoint"] == "mx1.example.edu:25 ([2001:db8:10::25])"
    assert document["findings"][0]["check"] == "dualstack"

    assert [e["label"] for e in document["endpoints"]] == [e.label for e in sample.ENDPOINTS]
    by_label = {e["label"]: e for e in document["endpoints"]}
    down = by_label[sample.MX_6.label]
    assert down["family"] == 6
    assert down["observation"]["ok"] is False
    assert down["observation"]["error"] == "no answer within 10 s"
    assert down["observation"]["error_kind"] == "timeout"
    assert down["observation"]["tls_version"] is None
    up = by_label[sample.IMAP_STARTTLS.label]["observation"]
    assert (up["tls_version"], up["cipher"]) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert up["mechanisms"] == ["PLAIN", "LOGIN"]
    assert up["plaintext_auth_before_tls"] == ["AUTH=PLAIN", "LOGIN"]
    assert by_label[sample.AUTOCONFIG_4.label]["observation"]["stapled"] is True

    assert len(document["results"]) == 17
    handshake = document["results"][0]
    assert handshake == {
        "check": "handshake",
        "endpoint": sample.IMAPS_4.label,
        "subject": sample.IMAPS_4.label,
        "severity": "ok",
        "detail": "TLS session made",
        "findings": [],
    }
    assert {r["severity"] for r in document["results"] if r["findings"]} == {
        "error", "warning", "unknown", "info"
    }  # fmt: skip

    assert set(document["certificates"]) == {e.label for e in sample.CHAINS}
    physics = document["certificates"][sample.PHYSICS.label]
    assert [(c["position"], c["days_left"]) for c in physics] == [(0, -3.2), (1, 1000.0)]
    assert physics[1]["subject"] == "CN=Physics CA,O=Physics"


# --- Nagios / Icinga ----------------------------------------------------------------------


def test_nagios_output_and_exit_code(report: AuditReport) -> None:
    output, code = render_nagios(report)
    assert code == 2
    lines = output.rstrip("\n").split("\n")
    assert lines[0] == (
        "MAILWARDEN AUDIT CRITICAL - 3 critical, 3 warnings, 1 unknown: "
        "mx1.example.edu:25 ([2001:db8:10::25]) DUALSTACK-V6-BROKEN; "
        "mail.physics.example.org:993 TLS-EXPIRED; imap.example.edu:143 AUTH-PLAINTEXT-BEFORE-TLS; "
        "pop.example.edu ENDPOINT-NO-ADDRESS; imap.example.edu:993 TLS-EXPIRES-SOON; 2 more | "
        "'findings_critical'=3;;;0; 'findings_warning'=3;;;0; 'findings_unknown'=1;;;0; "
        "'findings_info'=1;;;0; 'endpoints'=10;;;0; 'duration'=3.2s;;;0;"
    )
    long_output = lines[1:9]
    assert [line.split(" ")[:2] for line in long_output] == [
        [f.severity.value.upper(), f.code] for f in WORST_FIRST
    ]
    assert long_output[1] == (
        "ERROR TLS-EXPIRED mail.physics.example.org:993 (198.51.100.7): The certificate expired "
        "on 2026-12-01 (3 days ago). (fix: Renew the certificate and reload the IMAP server.)"
    )
    assert long_output[-1].endswith("instead) | 'imap.example.edu:993 days'=20;30;14;;")
    assert lines[9:] == [
        "'imap.example.edu:143 days'=20;30;14;;",
        "'smtp.example.edu:587 days'=85;30;14;;",
        "'mx1.example.edu:25 days'=48;30;14;;",
        "'autoconfig.example.edu:443 days'=200;30;14;;",
        "'mail.physics.example.org:993 days'=-4;30;14;;",
    ]
    # the plugin API's grammar: 'label'=value[UOM];[warn];[crit];[min];[max], space separated
    one = r"'(?:[^'=]|'')+'=(?:-?[0-9.]+|U)(?:s|%|B|c)?(?:;-?[0-9.]*){0,4}"
    values = " ".join([lines[0].split(" | ")[1], long_output[-1].split(" | ")[1], *lines[9:]])
    assert re.fullmatch(rf"{one}(?: {one})*", values), values


@pytest.mark.parametrize(
    ("keep", "code", "word"),
    [
        ((), 0, "OK"),
        ((Severity.INFO,), 0, "OK"),
        ((Severity.UNKNOWN, Severity.INFO), 3, "UNKNOWN"),
        ((Severity.UNKNOWN, Severity.WARNING), 1, "WARNING"),  # a warning wins over unknown
        ((Severity.UNKNOWN, Severity.ERROR), 2, "CRITICAL"),  # an error too
    ],
)
def test_nagios_exit_codes(
    report: AuditReport, keep: tuple[Severity, ...], code: int, word: str
) -> None:
    results = tuple(
        replace(r, findings=tuple(f for f in r.findings if f.severity in keep))
        for r in report.results
    )
    general = tuple(f for f in report.general if f.severity in keep)
    output, status = render_nagios(replace(report, results=results, general=general))
    assert status == code
    assert output.startswith(f"MAILWARDEN AUDIT {word} - ")
    if code == 0:
        notes = " (1 notes)" if keep else ""
        assert output.split(" | ")[0] == (
            f"MAILWARDEN AUDIT OK - 10 endpoints, 9 up, no problems{notes}"
        )


def test_nagios_service_without_certificate_is_undetermined(report: AuditReport) -> None:
    certificates = {k: v for k, v in report.certificates.items() if not k.startswith("mx1.")}
    output, _ = render_nagios(replace(report, certificates=certificates))
    assert "\n'mx1.example.edu:25 days'=U;30;14;;\n" in output


def test_nagios_thresholds_come_from_the_report(report: AuditReport) -> None:
    output, _ = render_nagios(replace(report, warn_days=45, critical_days=7))
    assert "'smtp.example.edu:587 days'=85;45;7;;" in output


# --- Prometheus ---------------------------------------------------------------------------


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample_ in family.samples:
            found.setdefault(sample_.name, []).append((sample_.labels, sample_.value))
    return found


def test_prometheus_metrics(report: AuditReport) -> None:
    text = render_prometheus(report)
    samples = _samples(text)
    days = {
        (labels["service"], labels["address"], labels["position"], labels["subject"]): value
        for labels, value in samples["mailwarden_audit_certificate_days_left"]
    }
    assert days == {
        (e.service, e.address, str(info.position), info.subject): info.days_left
        for e, chain in sample.CHAINS.items()
        for info in chain
    }
    assert len(days) == 18
    findings = {labels["severity"]: value for labels, value in samples["mailwarden_audit_findings"]}
    assert findings == {"error": 3, "warning": 3, "unknown": 1, "info": 1}
    assert samples["mailwarden_audit_duration_seconds"] == [({}, 3.2)]
    started = datetime(2026, 12, 4, 9, 30, tzinfo=UTC).timestamp()
    assert samples["mailwarden_audit_last_run_timestamp_seconds"] == [({}, started)]
    assert samples["mailwarden_audit_status"] == [({}, 2)]
    up = {(lab["service"], lab["address"]): v for lab, v in samples["mailwarden_audit_endpoint_up"]}
    assert up == {(e.service, e.address): 0 if e is sample.MX_6 else 1 for e in sample.ENDPOINTS}
    per_endpoint = {
        (lab["service"], lab["address"], lab["severity"]): v
        for lab, v in samples["mailwarden_audit_endpoint_findings"]
    }
    assert per_endpoint[("mx1.example.edu:25", "2001:db8:10::25", "error")] == 1
    assert sum(per_endpoint.values()) == 7  # the general finding is about no endpoint
    for name in (
        "certificate_days_left", "findings", "status", "duration_seconds",
        "last_run_timestamp_seconds", "endpoint_up", "endpoint_findings",
    ):  # fmt: skip
        assert re.search(rf"^# HELP mailwarden_audit_{name} \S", text, re.M), name
        assert f"\n# TYPE mailwarden_audit_{name} gauge\n" in text


def test_prometheus_file_is_replaced_whole(report: AuditReport, tmp_path: Path) -> None:
    target = tmp_path / "mailwarden_audit.prom"
    target.write_text("stale\n", encoding="utf-8")
    write_prometheus(report, target)
    assert target.read_text(encoding="utf-8") == render_prometheus(report)
    assert [p.name for p in tmp_path.iterdir()] == ["mailwarden_audit.prom"]


# --- hostile strings ----------------------------------------------------------------------


def test_hostile_strings_are_escaped_everywhere() -> None:
    report = _hostile_report()

    page = render_html(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; it&#39;s" in page
    tree = _parse(page)
    messages = _strings(tree, '//table[@id="findings"]//tr[@data-severity="error"]/td[4]/text()')
    assert HOSTILE_MESSAGE in messages  # the browser shows exactly what the server said
    assert _strings(tree, '//table[@id="findings"]//td[@class="fix"]/text()').count("<b>x</b>") == 1
    titles = [t.text_content() for t in _nodes(tree, "//g/title")]
    assert any(t.startswith(HOSTILE_SUBJECT + " (leaf)") for t in titles)
    assert not _nodes(tree, "//script | //b | //i")

    text = render_prometheus(report)
    assert 'subject="CN=evil\\"<script>x</script>,O=back\\\\slash\\nnewline"' in text
    subjects = {
        labels["subject"] for labels, _ in _samples(text)["mailwarden_audit_certificate_days_left"]
    }
    assert HOSTILE_SUBJECT in subjects

    console_text = _text(report)
    assert HOSTILE_MESSAGE.replace("\n", " ") in console_text  # markup printed as it is

    output, _ = render_nagios(report)
    first, *rest = output.split("\n")
    assert first.count("|") == 1
    assert "not markup[/] / next" in output
    assert all(line.count("|") <= 1 for line in rest)
    assert perf_label("a'b=c\nd") == "'a''b_c d'"

    document = json.loads(json_text(report))
    assert HOSTILE_MESSAGE in [f["message"] for f in document["findings"]]


# --- HTML, read as markup -----------------------------------------------------------------


def test_html_structure(report: AuditReport) -> None:
    page = render_html(report)
    tree = _parse(page)
    assert tree.get("lang") == "en"
    assert _string(tree, "//*[@id='overall-status']") == "CRITICAL"

    (grid,) = _nodes(tree, "//table[@id='status-grid']")
    assert _strings(grid, "thead/tr/th[@scope='col']/@data-service") == list(sample.SERVICES)
    domains = _nodes(grid, "tbody/tr/th[@scope='row']")
    assert [d.text_content() for d in domains] == [
        "example.edu", "physics.example.org", "uni-example.de", "other"
    ]  # fmt: skip

    def cell(domain: str, service: str) -> tuple[str | None, list[str]]:
        column = sample.SERVICES.index(service) + 1
        (td,) = _nodes(grid, f"tbody/tr[@data-domain='{domain}']/td[{column}]")
        return td.get("data-state"), [c.text_content() for c in _nodes(td, "span[@class='code']")]

    assert cell("example.edu", "mx1.example.edu:25") == ("error", ["DUALSTACK-V6-BROKEN"])
    assert cell("physics.example.org", "mx1.example.edu:25") == (
        "error",
        ["DUALSTACK-V6-BROKEN"],
    )
    assert cell("physics.example.org", "imap.example.edu:993") == ("none", [])
    assert cell("physics.example.org", "mail.physics.example.org:993") == ("error", ["TLS-EXPIRED"])
    assert cell("uni-example.de", "smtp.example.edu:587") == ("warning", ["TLS-LEGACY-VERSION"])
    assert cell("other", "autoconfig.example.edu:443") == (
        "unknown",
        ["TLS-REVOCATION-UNAVAILABLE"],
    )
    assert cell("other", "imap.example.edu:993") == ("none", [])

    markers = _nodes(tree, "//svg[@id='expiry-timeline']//circle[@class='marker']")
    assert len(markers) == sample.DISTINCT_CERTIFICATES
    states = [g.get("class") for g in _nodes(tree, "//svg//g")]
    assert states == [
        "cert state-error",  # the physics leaf, expired 3.2 days ago: at the left edge
        "cert state-warning",  # imap, 20.4 days: between critical (14) and warning (30)
        "cert state-ok",
        "cert state-ok",
        "cert state-ok beyond",  # 200 days: past the 120-day horizon
        "cert state-ok beyond",
        "cert state-ok beyond",
    ]

    rows = _nodes(tree, "//table[@id='findings']/tbody/tr")
    assert [_string(r, "td[2]") for r in rows] == [f.code for f in WORST_FIRST]
    assert len(_nodes(tree, "//section[contains(@class, 'service')]")) == len(sample.SERVICES)


def test_html_fetches_nothing(report: AuditReport) -> None:
    page = render_html(report)
    tree = _parse(page)
    assert not _strings(tree, "//script | //link | //img | //iframe | //object | //embed | //@src")
    ids = set(_strings(tree, "//@id"))
    hrefs = _strings(tree, "//@href")
    assert hrefs
    assert all(h.startswith("#") and h[1:] in ids for h in hrefs), hrefs
    style = _string(tree, "//style")
    assert "url(" not in style
    assert "@import" not in style
    policy = _string(tree, "//meta[@http-equiv='Content-Security-Policy']/@content")
    assert policy.startswith("default-src 'none'; style-src 'sha256-")


# --- HTML in headless Chromium ------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
PAGE_URL = "http://audit-report.invalid/report.html"
ARTIFACTS = ROOT / "test-artifacts" / "audit-report"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
WCAG_AA = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    "resultTypes": ["violations"],
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (make test does, from "
            "packaging/debian-test.txt)",
            pytrace=False,
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.mark.slow  # starts chromium
@pytest.mark.parametrize(("name", "width"), [("desktop", 1280), ("phone", 390)])
def test_html_in_chromium(browser: Browser, report: AuditReport, name: str, width: int) -> None:
    """The page is handed to the browser by a route; every other request is refused and
    recorded, and there must be none."""
    page_html = render_html(report)
    requested: list[str] = []

    def serve(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url == PAGE_URL:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=page_html)
        else:
            route.abort()

    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.route("**/*", serve)
    page.goto(PAGE_URL)
    page.wait_for_load_state("networkidle")

    expect(page.locator("html")).to_have_attribute("lang", "en")
    for service in sample.SERVICES:
        header = page.locator(f'#status-grid th[data-service="{service}"]')
        expect(header).to_have_text(re.compile(re.escape(service)))
    expect(page.locator("#status-grid tbody tr")).to_have_count(4)
    expect(page.locator("svg#expiry-timeline circle.marker")).to_have_count(
        sample.DISTINCT_CERTIFICATES
    )
    expect(page.locator("svg#expiry-timeline line.today")).to_have_count(1)
    box = page.locator("svg#expiry-timeline").bounding_box()
    assert box is not None
    assert box["width"] >= 720  # never shrunk below legible text: a phone scrolls it
    assert box["height"] >= 200

    results = Axe().run(page, options=WCAG_AA)
    serious = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], results.generate_report()
    assert results.violations_count == 0, results.generate_report()

    path = ARTIFACTS / f"report-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 20000
    page.screenshot(path=str(ARTIFACTS / f"report-{name}-screen.png"))
    assert requested == [PAGE_URL]
    context.close()


@pytest.mark.slow  # starts chromium
def test_axe_really_checks_the_report(browser: Browser, report: AuditReport) -> None:
    """The check above only counts if axe runs under the page's CSP: break it, see it fail."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content(render_html(report))
    page.evaluate("document.querySelector('#status-grid th').remove()")
    page.evaluate("document.documentElement.removeAttribute('lang')")
    results = Axe().run(page, options=WCAG_AA)
    assert "html-has-lang" in {v["id"] for v in results.response["violations"]}
    context.close()


def test_an_audit_that_found_no_endpoint_renders_everywhere() -> None:
    """DNS gave nothing: every format still says so, no renderer trips over empty parts."""
    finding = Finding(Severity.ERROR, "ENDPOINT-NO-ADDRESS", "imap.example.edu", "no address")
    empty = AuditReport(
        "2026-12-04T09:30:00+00:00", 0.25, "site.toml", (), (), (), general=(finding,)
    )
    assert "1 error, 0 warnings, 0 unknown, 0 notes · 0 endpoints · 0.2 s" in _text(empty)
    assert errors(to_json(empty), SCHEMA, SCHEMA) == []
    output, code = render_nagios(empty)
    assert code == 2
    assert output.startswith("MAILWARDEN AUDIT CRITICAL - 1 critical: imap.example.edu ")
    assert "'endpoints'=0;;;0;" in output
    tree = _parse(render_html(empty))
    assert _nodes(tree, "//svg[@id='expiry-timeline']")
    assert not _nodes(tree, "//circle[@class='marker']")
    assert _string(tree, "//table[@id='findings']/tbody/tr/td[2]") == "ENDPOINT-NO-ADDRESS"
    findings = _samples(render_prometheus(empty))["mailwarden_audit_findings"]
    assert ({"severity": "error"}, 1.0) in findings


def _with_site_results(report: AuditReport) -> AuditReport:
    """The sample plus what the site-wide checks add: results about a domain and an address."""
    soft = Finding(
        Severity.WARNING,
        "SPF-NEUTRAL-ALL",
        "example.edu",
        "the SPF record ends in ?all",
        "end it in -all",
    )
    site = (
        CheckResult("spf", None, (soft,), subject="example.edu"),
        CheckResult("dnsbl", None, (), "listed on none of 5 lists", subject="192.0.2.25"),
    )
    return replace(report, results=(*report.results, *site))


def test_site_wide_results_in_every_format(report: AuditReport) -> None:
    report = _with_site_results(report)

    text = _text(report)
    lines = text.splitlines()
    header = lines.index("Domains, outbound addresses, virus scanner")
    section = lines[header + 1 : header + 3]
    assert re.match(r"\s+example\.edu\s+spf\s+warning\b", section[0]), section
    assert re.match(r"\s+192\.0\.2\.25\s+dnsbl\s+ok\s+listed on none of 5 lists", section[1])
    assert "SPF-NEUTRAL-ALL" in text

    document = to_json(report)
    assert errors(document, SCHEMA, SCHEMA) == []
    rows = {(r["check"], r["subject"]): r for r in document["results"] if r["endpoint"] is None}
    assert rows[("spf", "example.edu")]["severity"] == "warning"
    assert rows[("dnsbl", "192.0.2.25")]["severity"] == "ok"
    assert all(r["subject"] == r["endpoint"] for r in document["results"] if r["endpoint"])

    samples = _samples(render_prometheus(report))
    site = {
        (lab["check"], lab["subject"], lab["severity"]): v
        for lab, v in samples["mailwarden_audit_site_findings"]
    }
    assert site == {("spf", "example.edu", "warning"): 1}

    tree = _parse(render_html(report))
    cells = [
        [cell.text_content() for cell in row.findall("td")]
        for row in _nodes(tree, "//table[@id='site-checks']/tbody/tr")
    ]
    assert [c[:3] for c in cells] == [
        ["example.edu", "spf", "warning"],
        ["192.0.2.25", "dnsbl", "OK"],
    ]

    output, status = render_nagios(report)
    assert status == 2
    assert "SPF-NEUTRAL-ALL example.edu" in output


def test_a_report_of_site_wide_checks_only() -> None:
    lone = _with_site_results(
        AuditReport(
            started="2026-12-04T09:30:00+00:00",
            seconds=0.4,
            site="site.toml",
            endpoints=(),
            observations=(),
            results=(),
        )
    )
    output, status = render_nagios(replace(lone, results=lone.results[1:]))
    assert status == 0
    assert "0 endpoints, 0 up, 1 site-wide results, no problems" in output
    assert errors(to_json(lone), SCHEMA, SCHEMA) == []
    assert "192.0.2.25" in _text(lone)
