"""``mailwarden probe`` against a whole site on loopback: Knot DNS, nginx with test-CA
certificates in front of a real ``mailwarden serve``, Dovecot and Postfix (tests/fixtures/
discovery_lab.py). A good site first, then one broken variant per test."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.cli import main
from tests.fixtures.discovery_lab import ADDRESS as USER
from tests.fixtures.discovery_lab import ALIAS, DOMAIN, LOGIN, MOVED, Lab, running_lab
from tests.fixtures.knot import silent_dns
from tests.fixtures.nginx import NOT_CONFIG_BODY, Vhost
from tests.fixtures.server import running_server

pytestmark = pytest.mark.slow  # starts the discovery lab (knotd, nginx) and mailwarden serve

AUTOCONFIG = f"autoconfig.{DOMAIN}"
AUTODISCOVER = f"autodiscover.{DOMAIN}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("lab")) as running:
        yield running


def probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """Run the command as a user would and read its JSON report."""
    capsys.readouterr()
    status = main(["probe", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert err == "", err
    report: dict[str, Any] = json.loads(out)
    return status, report


def client(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["clients"] if c["client"] == name]
    assert len(found) == 1, [c["client"] for c in report["clients"]]
    return found[0]


def codes(report: dict[str, Any], *severities: str) -> dict[str, list[dict[str, Any]]]:
    wanted = severities or ("info", "warning", "error")
    result: dict[str, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        if finding["severity"] in wanted:
            result.setdefault(finding["code"], []).append(finding)
    return result


def chosen(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["steps"] if s["chosen"]]


def test_good_site_every_client_ends_with_the_site_settings(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path) as (knot, nginx):
        status, report = probe(
            capsys, USER, "--config", str(lab.site_file), *lab.probe_args(knot, nginx)
        )
    assert codes(report, "warning", "error") == {}, report["findings"]
    assert status == 0
    assert report["site_file"] == "compared"  # the site file has the user

    tb = client(report, "thunderbird")
    (winner,) = chosen(tb)
    assert winner["priority"] == 1
    assert winner["target"].startswith(f"https://{AUTOCONFIG}/mail/config-v1.1.xml?")
    assert "emailaddress=jdoe%40example.test" in winner["target"]
    assert winner["tls"]
    assert AUTOCONFIG in winner["tls"]
    # Thunderbird starts all four URLs at once: each starts before the first one has finished.
    own = [s for s in tb["steps"] if s["priority"] in (1, 2, 3, 4) and s["action"] == "GET"]
    assert len(own) == 4
    first_end = min(s["started_ms"] + s["ms"] for s in own)
    assert all(s["started_ms"] <= first_end for s in own)

    expected_in = {"kind": "imap", "host": f"imap.{DOMAIN}", "port": 993, "tls": "implicit"}
    expected_out = {"kind": "smtp", "host": f"smtp.{DOMAIN}", "port": 465, "tls": "implicit"}
    for name in ("thunderbird", "outlook", "autodiscover-json"):
        settings = client(report, name)["settings"]
        assert settings is not None, name
        for role, wanted in (("incoming", expected_in), ("outgoing", expected_out)):
            got = settings[role]
            assert {k: got[k] for k in wanted} == wanted, (name, role, got)
            assert got["login"] == LOGIN, (name, role)

    outlook = client(report, "outlook")
    assert outlook["source"] == f"https://{AUTODISCOVER}/autodiscover/autodiscover.xml"
    assert outlook["asks_user"] == []
    # Outlook asks the bare domain first; its web server has no Autodiscover (404): no finding.
    assert outlook["steps"][0]["target"] == f"https://{DOMAIN}/autodiscover/autodiscover.xml"
    assert outlook["steps"][0]["status"] == 404

    servers = {(s["kind"], s["port"], s["tls"]): s for s in report["servers"]}
    assert set(servers) == {
        ("imap", 993, "implicit"),
        ("imap", 143, "starttls"),
        ("pop3", 995, "implicit"),
        ("smtp", 465, "implicit"),
        ("smtp", 587, "starttls"),
    }
    for server in servers.values():
        assert server["ok"], server
        assert {"PLAIN", "LOGIN"} <= set(server["mechanisms"]), server


def test_text_report_names_the_chosen_source(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path) as (knot, nginx):
        capsys.readouterr()
        status = main(["probe", USER, *lab.probe_args(knot, nginx), "--client", "thunderbird"])
    out = capsys.readouterr().out
    assert status == 0
    assert "◀ chosen" in out
    assert f"IMAP imap.{DOMAIN}:993 implicit, login {LOGIN}" in out
    assert "no findings" in out


def test_expired_certificate_on_the_autoconfig_host(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expired = lab.ca.issue(AUTOCONFIG, expired=True)
    vhosts = lab.vhosts({AUTOCONFIG: Vhost((AUTOCONFIG,), expired, upstream=lab.upstream)})
    with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
        status, report = probe(capsys, USER, *lab.probe_args(knot, nginx))
    assert status == 2
    tls = codes(report, "error")["PROBE-TLS"]
    assert any(
        f["subject"].startswith(f"https://{AUTOCONFIG}/") and "expired" in f["message"] for f in tls
    ), tls
    # Thunderbird falls back to plain HTTP, and says so.
    (winner,) = chosen(client(report, "thunderbird"))
    assert winner["target"].startswith(f"http://{AUTOCONFIG}/")
    assert "PROBE-HTTP-ONLY" in codes(report, "warning")
    assert client(report, "thunderbird")["asks_user"]


def test_certificate_without_the_autoconfig_name(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_autodiscover = lab.ca.issue(f"www.{DOMAIN}")
    vhosts = lab.vhosts(
        {AUTOCONFIG: Vhost((AUTOCONFIG,), only_autodiscover, upstream=lab.upstream)}
    )
    with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
        status, report = probe(capsys, USER, *lab.probe_args(knot, nginx), "--client", "all")
    assert status == 2
    (finding,) = [
        f
        for f in codes(report, "error")["PROBE-TLS"]
        if f["subject"].startswith(f"https://{AUTOCONFIG}")
    ]
    assert "mismatch" in finding["message"].lower() or AUTOCONFIG in finding["message"]
    # Outlook does not use autoconfig.: it still gets its settings.
    assert client(report, "outlook")["settings"] is not None


def test_one_certificate_strategy_is_a_note_not_an_error(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The alias domain's names are served over plain HTTP only; the TLS port refuses them
    (no certificate for them), as the SRV/plain-HTTP strategies of 'dns records' intend."""
    plain = {
        name: Vhost((name,), None, upstream=lab.upstream)
        for name in (f"autoconfig.{ALIAS}", f"autodiscover.{ALIAS}")
    }
    with lab.running(tmp_path, vhosts=lab.vhosts(plain)) as (knot, nginx):
        status, report = probe(
            capsys,
            f"jdoe@{ALIAS}",
            "--client",
            "thunderbird",
            "--no-servers",
            *lab.probe_args(knot, nginx),
        )
    refused = codes(report, "info")["PROBE-NO-HTTPS"]
    assert any(f["subject"].startswith(f"https://autoconfig.{ALIAS}/") for f in refused)
    assert "PROBE-TLS" not in codes(report)
    assert "PROBE-HTTP-ONLY" in codes(report, "warning")
    assert status == 1


def test_outlook_users_see_a_certificate_warning(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = lab.ca.issue(f"mail.{DOMAIN}")
    vhosts = lab.vhosts({AUTODISCOVER: Vhost((AUTODISCOVER,), wrong, upstream=lab.upstream)})
    with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
        status, report = probe(
            capsys, USER, "--client", "outlook", "--no-servers", *lab.probe_args(knot, nginx)
        )
    assert status == 2
    outlook = client(report, "outlook")
    assert any(
        "certificate warning" in question and AUTODISCOVER in question
        for question in outlook["asks_user"]
    ), outlook["asks_user"]
    assert any(
        f["subject"].startswith(f"https://{AUTODISCOVER}/")
        for f in codes(report, "error")["PROBE-TLS"]
    )


def test_no_autodiscover_name_and_no_srv_leaves_outlook_without_settings(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path, drop=(f"{AUTODISCOVER}.", f"_autodiscover._tcp.{DOMAIN}.")) as (
        knot,
        nginx,
    ):
        status, report = probe(capsys, USER, *lab.probe_args(knot, nginx))
    assert status == 2
    outlook = client(report, "outlook")
    assert outlook["settings"] is None
    srv = [s for s in outlook["steps"] if s["action"] == "DNS SRV"]
    assert srv
    assert srv[0]["outcome"] == "failed"
    assert "NXDOMAIN" in srv[0]["detail"]
    missing = codes(report, "error")["PROBE-NO-SETTINGS"]
    assert any("Outlook" in f["message"] for f in missing)
    # Thunderbird's autoconfig name is still published: Thunderbird is fine.
    assert client(report, "thunderbird")["settings"] is not None


def test_srv_route_for_a_domain_without_its_own_autodiscover_name(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alias_user = f"jdoe@{ALIAS}"
    with lab.running(tmp_path, drop=(f"autodiscover.{ALIAS}.",)) as (knot, nginx):
        status, report = probe(
            capsys, alias_user, "--client", "outlook", *lab.probe_args(knot, nginx)
        )
    # Autodiscover v2 JSON has no SRV step: without autodiscover.<alias> it finds nothing.
    (json_missing,) = codes(report, "warning", "error")["PROBE-NO-SETTINGS"]
    assert json_missing["severity"] == "warning"
    assert "JSON" in json_missing["message"]
    assert client(report, "autodiscover-json")["settings"] is None
    outlook = client(report, "outlook")
    assert outlook["source"] == f"https://{AUTODISCOVER}/autodiscover/autodiscover.xml"
    assert outlook["settings"]["incoming"]["login"] == LOGIN
    assert any("SRV" in question for question in outlook["asks_user"])
    assert "PROBE-REDIRECT-ELSEWHERE" in codes(report, "info")
    assert status == 1


def test_a_moved_domain_sends_every_client_to_the_new_address(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path) as (knot, nginx):
        status, report = probe(
            capsys,
            f"jdoe@{MOVED}",
            "--no-servers",
            "--config",
            str(lab.site_file),
            *lab.probe_args(knot, nginx),
        )
    assert codes(report, "warning", "error") == {}, report["findings"]
    assert status == 0
    assert MOVED in report["site_file"]  # nothing to compare: the site file says "moved"
    redirects = codes(report, "info")["PROBE-REDIRECT-ADDRESS"]
    assert any(f"jdoe@{DOMAIN}" in f["message"] for f in redirects)
    for name in ("thunderbird", "outlook"):
        result = client(report, name)
        assert result["settings"]["incoming"]["login"] == LOGIN, name
        assert result["settings"]["incoming"]["host"] == f"imap.{DOMAIN}", name
    (winner,) = chosen(client(report, "thunderbird"))
    assert winner["target"].startswith(f"https://autoconfig.{DOMAIN}/")  # after the 302


def test_thunderbird_finds_the_settings_through_the_mx_host(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No autoconfig name for the alias domain, but its MX is in the main domain, whose
    autoconfig host knows the alias: Thunderbird's MX step finds it (and asks the user)."""
    with lab.running(
        tmp_path,
        drop=(f"autoconfig.{ALIAS}.",),
        extra={ALIAS: f"{ALIAS}. 300 IN MX 10 mx.{DOMAIN}.\n"},
    ) as (knot, nginx):
        status, report = probe(
            capsys,
            f"jdoe@{ALIAS}",
            "--client",
            "thunderbird",
            "--no-servers",
            *lab.probe_args(knot, nginx),
        )
    tb = client(report, "thunderbird")
    (winner,) = chosen(tb)
    assert winner["priority"] == 6
    assert winner["target"].startswith(f"https://autoconfig.{DOMAIN}/mail/config-v1.1.xml?")
    assert "emailaddress=jdoe%40example-alias.test" in winner["target"]
    assert tb["settings"]["incoming"]["login"] == LOGIN
    assert any("MX" in question for question in tb["asks_user"])
    assert status in (0, 1)


def test_clients_that_end_with_different_settings(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """autodiscover. is answered by a server with an older site file (IMAPS on port 9993)."""
    stale = tmp_path / "stale"
    stale.mkdir()
    text = lab.site_file.read_text(encoding="utf-8")
    (stale / "site.toml").write_text(text.replace("port = 993", "port = 9993"))
    shutil.copy(lab.folder / "users.sqlite", stale / "users.sqlite")
    with running_server(stale / "site.toml") as old:
        vhosts = lab.vhosts(
            {AUTODISCOVER: Vhost((AUTODISCOVER,), lab.autoconfig_cert, upstream=old)}
        )
        with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
            status, report = probe(capsys, USER, "--no-servers", *lab.probe_args(knot, nginx))
    assert status == 1
    disagree = codes(report, "warning")["PROBE-DISAGREE"]
    assert any(
        f["message"].startswith("Thunderbird and Outlook") and "9993" in f["message"]
        for f in disagree
    ), disagree


def test_starttls_advertised_on_a_port_that_speaks_implicit_tls(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path) as (knot, nginx):
        status, report = probe(
            capsys,
            USER,
            "--client",
            "thunderbird",
            *lab.probe_args(knot, nginx, p143=lab.dovecot.imaps),
        )
    assert status == 2
    (finding,) = codes(report)["PROBE-SERVER-TLS-MODE"]
    assert finding["subject"] == f"imap.{DOMAIN}:143"
    assert "implicit" in finding["message"]


def test_autodiscover_host_redirecting_in_a_loop(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = Vhost(
        (AUTODISCOVER,),
        lab.autoconfig_cert,
        redirect=f"https://{AUTODISCOVER}/autodiscover/autodiscover.xml",
    )
    vhosts = lab.vhosts({AUTODISCOVER: loop})
    with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
        status, report = probe(capsys, USER, "--client", "outlook", *lab.probe_args(knot, nginx))
    assert status == 2
    assert client(report, "outlook")["settings"] is None
    loops = codes(report, "warning")["PROBE-REDIRECT-LOOP"]
    assert any(AUTODISCOVER in f["subject"] for f in loops)


@pytest.mark.parametrize(
    ("vhost", "code"),
    [
        ({"body_bytes": 2 * 1024 * 1024, "content_type": "text/xml"}, "PROBE-TOO-LARGE"),
        ({"content_type": "text/plain"}, "PROBE-CONTENT-TYPE"),
        ({"content_type": "text/xml"}, "PROBE-BAD-DOCUMENT"),
        ({"redirect": "http://autoconfig.example.test/mail/config-v1.1.xml"}, "PROBE-DOWNGRADE"),
        ({"hang": True}, "PROBE-TIMEOUT"),
    ],
    ids=["oversized", "text-plain", "not-a-config", "https-to-http", "never-answers"],
)
def test_hostile_autoconfig_answers_are_one_clear_step_each(
    lab: Lab,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    vhost: dict[str, Any],
    code: str,
) -> None:
    assert NOT_CONFIG_BODY  # the body of the text/xml answer: a web page, not a config
    bad = Vhost((AUTOCONFIG,), lab.autoconfig_cert, http=False, **vhost)
    vhosts = lab.vhosts({AUTOCONFIG: bad})
    started = time.monotonic()
    with lab.running(tmp_path, vhosts=vhosts) as (knot, nginx):
        _status, report = probe(
            capsys,
            USER,
            "--client",
            "thunderbird",
            "--timeout",
            "1",
            "--no-servers",
            *lab.probe_args(knot, nginx),
        )
    assert time.monotonic() - started < 10
    found = codes(report)[code]
    assert any(f["subject"].startswith(f"https://{AUTOCONFIG}/") for f in found), found
    step = next(
        s
        for s in client(report, "thunderbird")["steps"]
        if s["target"].startswith(f"https://{AUTOCONFIG}/")
    )
    assert step["outcome"] == "failed"
    assert "\n" not in step["detail"]
    assert len(step["detail"]) < 400


def test_a_resolver_that_never_answers(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with silent_dns() as nameserver, lab.running(tmp_path) as (_knot, nginx):
        started = time.monotonic()
        status, report = probe(
            capsys, USER, "--timeout", "0.5", "--deadline", "4", *lab.probe_args(nameserver, nginx)
        )
    assert time.monotonic() - started < 6
    assert status == 2
    assert "PROBE-DNS" in codes(report, "warning")
    assert all(c["settings"] is None for c in report["clients"])


def test_servfail_for_the_domain(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.running(tmp_path, servfail=[DOMAIN]) as (knot, nginx):
        status, report = probe(capsys, USER, "--client", "outlook", *lab.probe_args(knot, nginx))
    assert status == 2
    dns = codes(report, "warning")["PROBE-DNS"]
    assert any("SERVFAIL" in f["message"] for f in dns)


def test_the_deadline_bounds_the_whole_probe(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hang = {
        name: Vhost((name,), lab.autoconfig_cert, hang=True) for name in (AUTOCONFIG, AUTODISCOVER)
    }
    with lab.running(tmp_path, vhosts=lab.vhosts(hang)) as (knot, nginx):
        started = time.monotonic()
        _status, report = probe(
            capsys, USER, "--timeout", "5", "--deadline", "1.5", *lab.probe_args(knot, nginx)
        )
    assert time.monotonic() - started < 4
    assert "PROBE-DEADLINE" in codes(report, "warning")


def test_settings_that_differ_from_the_site_file(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The served site gives IMAP on 993 first; the site file checked here says 143 first."""
    other = lab.folder / "other-site.toml"
    text = lab.site_file.read_text(encoding="utf-8")
    first, second = text.split("[[services.campus.imap]]")[1:3]
    other.write_text(text.replace(first, "@@").replace(second, first).replace("@@", second))
    shutil.copy(lab.folder / "users.sqlite", tmp_path / "unused.sqlite")
    with lab.running(tmp_path) as (knot, nginx):
        status, report = probe(
            capsys, USER, "--config", str(other), "--no-servers", *lab.probe_args(knot, nginx)
        )
    assert status == 2
    differs = codes(report, "error")["PROBE-SITE-DIFFERS"]
    assert {f["message"].split(" ends with")[0] for f in differs} >= {"Thunderbird", "Outlook"}
    assert all("143" in f["message"] and "993" in f["message"] for f in differs)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["not-an-address"], "not an e-mail address"),
        (["a@example.test", "--resolver", "dns.example"], "--resolver"),
        (["a@example.test", "--connect-to", "nonsense"], "--connect-to"),
        (["a@example.test", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    status = main(["probe", *args])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert "mailwarden: error [INPUT-INVALID]" in captured.err
    assert words in captured.err
    assert "Traceback" not in captured.err
