"""``mailwarden audit`` end to end against real servers: a real PKI with an ``openssl ocsp``
responder and CRLs (tests/fixtures/ocsp_lab.py), nginx serving one certificate of each class,
Dovecot (IMAP, implicit and STARTTLS), Postfix (submission, STARTTLS) and Knot DNS for the names.
Each endpoint must get its verdict, in every report format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailwarden.cli import main
from tests.fixtures.dovecot import Dovecot, running_dovecot
from tests.fixtures.knot import KnotServer, running_knot
from tests.fixtures.nginx import NginxServer, Vhost, running_nginx
from tests.fixtures.ocsp_lab import LabCert, OcspLab, running_ocsp_lab
from tests.fixtures.submission import SubmissionServer, running_submission
from tests.fixtures.tls_ca import ServerCert

pytestmark = pytest.mark.slow  # starts knotd, nginx, dovecot, postfix and an OCSP responder

D = "example.test"


def served(cert: LabCert) -> ServerCert:
    return ServerCert(chain=cert.chain, key=cert.key, leaf=cert.cert)


@dataclass
class Site:
    file: Path
    knot: KnotServer
    nginx: NginxServer
    dovecot: Dovecot
    submission: SubmissionServer
    pki: OcspLab
    expected: dict[str, set[str]]
    """Host name → codes the audit must report for it."""


CLASSES = {
    # certificate class of the lab → codes of the warnings/errors the audit must report
    "good": set(),
    "crl_only_good": set(),
    "expired": {"TLS-EXPIRED"},
    "revoked": {"TLS-REVOKED"},
    "revoked_crl_only": {"TLS-REVOKED"},
    "must_staple": {"TLS-MUST-STAPLE-MISSING"},
}
WRONG_NAME = f"wrongname.{D}"  # served with the good certificate, which does not name it
DUAL = f"mail.{D}"  # in the good certificate; its AAAA ::1 has nothing listening


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("audit")
    with running_ocsp_lab(tmp / "pki") as pki:
        names: dict[str, LabCert] = {getattr(pki, c).name: getattr(pki, c) for c in CLASSES}
        expected = {getattr(pki, c).name: codes for c, codes in CLASSES.items()}
        names[WRONG_NAME] = names[DUAL] = pki.good
        expected[WRONG_NAME] = {"TLS-NAME-MISMATCH"}
        expected[DUAL] = {"DUALSTACK-V6-BROKEN"}
        vhosts = [Vhost((name,), served(cert), http=False) for name, cert in names.items()]
        with (
            running_nginx(vhosts, tmp) as nginx,
            running_dovecot(served(pki.good)) as dovecot,
            running_submission(served(pki.good), dovecot.auth_socket) as submission,
        ):
            zone = "".join(f"{name}. 300 IN A 127.0.0.1\n" for name in names)
            zone += (
                f"mail.{D}. 300 IN AAAA ::1\n"
                f"imap.{D}. 300 IN A {dovecot.address}\n"
                f"smtp.{D}. 300 IN A 127.0.0.1\n"
            )  # autodiscover.{D} has no address on purpose
            with running_knot({D: zone}, tmp) as knot:
                extra = "".join(
                    f'[[audit.endpoints]]\nhost = "{name}"\nport = {nginx.https_port}\n'
                    'protocol = "https"\n\n'
                    for name in names
                )
                file = tmp / "site.toml"
                file.write_text(
                    f"""\
primary_domain = "{D}"

[organisation]
name = "Audit Test University"
short_name = "ATU"

[server]
public_host = "autodiscover.{D}"

[[services.campus.imap]]
host = "imap.{D}"
port = {dovecot.imaps}
tls = "implicit"

[[services.campus.imap]]
host = "imap.{D}"
port = {dovecot.imap}
tls = "starttls"

[[services.campus.smtp]]
host = "smtp.{D}"
port = {submission.starttls}
tls = "starttls"

[domains."{D}"]
services = "campus"

[audit]
mx = false
ca_file = "{pki.root}"
timeout = 5
{extra}""",
                    encoding="utf-8",
                )
                yield Site(file, knot, nginx, dovecot, submission, pki, expected)


def audit(capsys: pytest.CaptureFixture[str], site: Site, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["audit", "--config", str(site.file), "--resolver", site.knot.nameserver, *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out


def test_every_endpoint_gets_its_verdict(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = audit(capsys, site, "--format", "json")
    report: dict[str, Any] = json.loads(out)
    assert report["schema"] == "mailwarden-audit"
    assert status == 2 == report["exit_status"]
    serious: dict[str, set[str]] = {}
    for finding in report["findings"]:
        if finding["severity"] in ("warning", "error"):
            host = finding["subject"].split(":")[0].split(" ")[0]
            serious.setdefault(host, set()).add(finding["code"])
    for name, codes in site.expected.items():
        assert serious.get(name, set()) == codes, (name, serious.get(name))
    # The mail servers: Dovecot is clean; Postfix still accepts TLS 1.0/1.1 by default.
    assert serious.get(f"imap.{D}", set()) == set()
    assert serious.get(f"smtp.{D}", set()) == {"TLS-LEGACY-VERSION"}
    # The autoconfig host has no address: one finding about no single endpoint.
    assert serious[f"autodiscover.{D}"] == {"ENDPOINT-NO-ADDRESS"}
    observed = {e["label"]: e["observation"] for e in report["endpoints"]}
    imaps = observed[f"imap.{D}:{site.dovecot.imaps} ({site.dovecot.address})"]
    assert {"PLAIN", "LOGIN"} <= set(imaps["mechanisms"])
    assert imaps["plaintext_auth_before_tls"] == []


def test_nagios_mode(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = audit(capsys, site, "--format", "nagios", "--only", "expiry,name")
    first = out.splitlines()[0]
    assert status == 2
    assert first.startswith("MAILWARDEN AUDIT CRITICAL")
    assert "TLS-EXPIRED" in out
    assert f"'{site.pki.good.name}:{site.nginx.https_port} days'=" in out
    assert "TLS-REVOKED" not in out  # --only leaves revocation out


def test_html_and_prometheus_files(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "audit.html"
    metrics = tmp_path / "audit.prom"
    status, out = audit(
        capsys, site, "--format", "html", "--output", str(page), "--prometheus", str(metrics)
    )
    assert status == 2
    assert out == ""
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert site.pki.expired.name in html
    assert "TLS-REVOKED" in html
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    days = families["mailwarden_audit_certificate_days_left"]
    name = site.pki.expired.name
    expired = [s for s in days.samples if s.labels.get("service", "").startswith(name)]
    assert expired
    assert all(s.value < 0 for s in expired if s.labels.get("position") == "0")


def test_bad_input_is_one_line(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    status, _out = audit(capsys, site, "--only", "nonsense")
    err = capsys.readouterr().err
    assert status == 2
    status = main(["audit", "--config", str(site.file), "--only", "nonsense"])
    err = capsys.readouterr().err
    assert status == 2
    assert "mailwarden: error [INPUT-INVALID]: --only 'nonsense'" in err
    assert "known: handshake" in err
