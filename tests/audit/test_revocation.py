"""Revocation verdicts against a real PKI: openssl's OCSP responder, its CRLs and staples.

Every certificate class of the lab (tests/fixtures/ocsp_lab.py) gets its verdict over real HTTP.
Answers a correct responder never gives (a flipped signature byte, an expired answer, a wrong
signer or nonce) come from a small responder started on the lab's OCSP port for that test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import http.server
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailwarden.audit.model import Endpoint
from mailwarden.audit.revocation import (
    CODES,
    SEVERITIES,
    CrlCache,
    Fetch,
    FetchError,
    Revocation,
    check_revocation,
    http_fetch,
    revocation_findings,
    verify_staple,
)
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver
from mailwarden.findings import Severity, exit_status
from tests.fixtures.net import free_port
from tests.fixtures.ocsp_lab import LabCert, OcspLab, running_ocsp_lab
from tests.fixtures.tls_ca import TestCA

pytestmark = pytest.mark.slow  # starts OCSP responders (openssl ocsp)

ENDPOINT = Endpoint("imap.example.test", "127.0.0.1", 993, "imap", "implicit")
Answer = Callable[[str, str, bytes], tuple[int, bytes]]
"""A test responder: (method, path, body) -> (HTTP status, body)."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OcspLab]:
    with running_ocsp_lab(tmp_path_factory.mktemp("ocsp-lab")) as running:
        yield running


@pytest.fixture
def fresh(lab: OcspLab) -> Iterator[OcspLab]:
    """The module's lab, with both its servers running again after the test."""
    yield lab
    lab.start_responder()
    lab.start_crl_server()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def fetcher(timeout: float = 5.0) -> Fetch:
    return http_fetch(Network(Resolver()), timeout=timeout)


def fetch_now(fetch: Fetch, method: str, url: str) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        return await fetch(method, url, None, "")

    return asyncio.run(go())


def check(
    lab: OcspLab,
    leaf: LabCert,
    *,
    at: datetime.datetime | None = None,
    timeout: float = 5.0,
    fetch: Fetch | None = None,
    cache: CrlCache | None = None,
) -> Revocation:
    return asyncio.run(
        check_revocation(
            leaf.load(),
            lab.issuer(),
            fetch or fetcher(timeout),
            now=at or now(),
            timeout=timeout,
            crl_cache=cache,
        )
    )


def codes(r: Revocation) -> dict[str, Severity]:
    return {f.code: f.severity for f in revocation_findings(r, ENDPOINT)}


@contextlib.contextmanager
def responder(port: int, answer: Answer) -> Iterator[list[str]]:
    """A small HTTP server on 127.0.0.1:``port`` answering with ``answer``; yields the methods
    of the requests it saw."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, method: str, body: bytes) -> None:
            seen.append(method)
            status, data = answer(method, self.path, body)
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._reply("POST", self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def do_GET(self) -> None:
            self._reply("GET", b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def instead_of_responder(lab: OcspLab, answer: Answer) -> Iterator[list[str]]:
    lab.stop_responder()
    try:
        with responder(lab.ocsp_port, answer) as seen:
            yield seen
    finally:
        lab.start_responder()


def flip_signature_byte(der: bytes) -> bytes:
    signature = ocsp.load_der_ocsp_response(der).signature
    at = der.rindex(signature) + len(signature) // 2
    return der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]


def signed_response(
    lab: OcspLab,
    leaf: LabCert,
    *,
    signer: x509.Certificate | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    this_update: datetime.datetime | None = None,
    next_update: datetime.datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A response saying ``good`` for ``leaf``, by the lab's delegated responder unless told."""
    if signer is None:
        signer = x509.load_pem_x509_certificate(lab.ocsp_signer.read_bytes())
    if key is None:
        loaded = serialization.load_pem_private_key(lab.ocsp_key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        key = loaded
    moment = now()
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.load(),
            issuer=lab.issuer(),
            algorithm=hashes.SHA1(),  # noqa: S303
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=this_update or moment - datetime.timedelta(minutes=1),
            next_update=next_update or moment + datetime.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        .certificates([signer])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def leaf_key(leaf: LabCert) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(leaf.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# ------------------------------------------------------------------------ every class, real lab


def test_good_certificate_is_good_per_ocsp(lab: OcspLab) -> None:
    r = check(lab, lab.good)
    assert (r.status, r.source, r.url) == ("good", "ocsp", lab.ocsp_url)
    assert r.failures == ()
    assert "delegated responder" in r.detail
    assert "Mail Lab OCSP Responder" in r.detail
    assert r.this_update is not None
    assert r.next_update is not None
    assert revocation_findings(r, ENDPOINT) == []


def test_revoked_certificate_is_revoked_per_ocsp(lab: OcspLab) -> None:
    r = check(lab, lab.revoked)
    assert (r.status, r.source, r.reason) == ("revoked", "ocsp", "keyCompromise")
    assert r.revoked_at is not None
    assert r.serial == format(lab.revoked.serial, "X")
    findings = revocation_findings(r, ENDPOINT)
    assert [(f.code, f.severity) for f in findings] == [("TLS-REVOKED", Severity.ERROR)]
    assert "keyCompromise" in findings[0].message
    assert lab.ocsp_url in findings[0].message
    assert findings[0].subject == ENDPOINT.label
    assert findings[0].fix
    assert exit_status(findings) == 2


def test_revoked_after_the_crl_is_revoked_per_ocsp(lab: OcspLab) -> None:
    crl = x509.load_der_x509_crl(lab.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(lab.revoked_ocsp_only.serial) is None
    r = check(lab, lab.revoked_ocsp_only)
    assert (r.status, r.source, r.reason) == ("revoked", "ocsp", "affiliationChanged")
    assert codes(r) == {"TLS-REVOKED": Severity.ERROR}


def test_revoked_certificate_without_responder_is_revoked_per_crl(lab: OcspLab) -> None:
    r = check(lab, lab.revoked_crl_only)
    assert (r.status, r.source, r.url) == ("revoked", "crl", lab.crl_url)
    assert r.reason == "cessationOfOperation"
    assert r.failures == ()  # no responder to fail: a CRL-only certificate is normal
    assert codes(r) == {"TLS-REVOKED": Severity.ERROR}


def test_crl_only_certificate_is_good_without_findings(lab: OcspLab) -> None:
    r = check(lab, lab.crl_only_good)
    assert (r.status, r.source, r.url) == ("good", "crl", lab.crl_url)
    assert r.next_update is not None
    assert "not listed" in r.detail
    assert revocation_findings(r, ENDPOINT) == []


def test_certificate_unknown_to_the_responder_falls_back_to_the_crl(lab: OcspLab) -> None:
    r = check(lab, lab.unknown)
    assert (r.status, r.source) == ("good", "crl")
    assert [(f.source, f.kind) for f in r.failures] == [("ocsp", "unknown")]
    assert codes(r) == {"TLS-OCSP-UNKNOWN": Severity.WARNING}


@pytest.mark.parametrize("name", ["must_staple", "expired", "rsa1024", "sha1"])
def test_other_classes_are_good_per_ocsp(lab: OcspLab, name: str) -> None:
    r = check(lab, lab.leaves[name])
    assert (r.status, r.source) == ("good", "ocsp"), r.detail


def test_certificate_without_any_url_is_not_checkable(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("plain.example.test")
    leaf = x509.load_pem_x509_certificate(issued.leaf.read_bytes())
    issuer = x509.load_pem_x509_certificate(ca.intermediate.read_bytes())
    r = asyncio.run(check_revocation(leaf, issuer, fetcher(), now=now(), timeout=2))
    assert (r.status, r.source) == ("not-checkable", "none")
    assert codes(r) == {"TLS-NO-REVOCATION-INFO": Severity.INFO}


# ------------------------------------------------------------------------ sources out of reach


def test_stopped_responder_gives_the_crl_verdict_and_a_warning(fresh: OcspLab) -> None:
    fresh.stop_responder()
    r = check(fresh, fresh.good)
    assert (r.status, r.source) == ("good", "crl")
    assert [(f.source, f.kind) for f in r.failures] == [("ocsp", "unavailable")]
    assert codes(r) == {"TLS-OCSP-UNAVAILABLE": Severity.WARNING}
    revoked = check(fresh, fresh.revoked)
    assert (revoked.status, revoked.source) == ("revoked", "crl")
    assert codes(revoked) == {
        "TLS-REVOKED": Severity.ERROR,
        "TLS-OCSP-UNAVAILABLE": Severity.WARNING,
    }
    # What the CRL cannot know: revoked after it was issued, so it looks good until the next CRL.
    late = check(fresh, fresh.revoked_ocsp_only)
    assert (late.status, late.source) == ("good", "crl")


def test_stopped_responder_and_crl_server_give_unknown_never_critical(fresh: OcspLab) -> None:
    fresh.stop_responder()
    fresh.stop_crl_server()
    for leaf in (fresh.good, fresh.revoked, fresh.crl_only_good):
        r = check(fresh, leaf)
        assert (r.status, r.source) == ("unavailable", "none"), leaf.name
        findings = revocation_findings(r, ENDPOINT)
        assert [(f.code, f.severity) for f in findings] == [
            ("TLS-REVOCATION-UNAVAILABLE", Severity.UNKNOWN)
        ]
        assert findings[0].subject == ENDPOINT.label
        assert exit_status(findings) == 3
        assert fresh.crl_url in findings[0].message


def test_unknown_certificate_without_a_crl_answer_stays_unknown(fresh: OcspLab) -> None:
    fresh.stop_crl_server()
    r = check(fresh, fresh.unknown)
    assert (r.status, r.source, r.url) == ("unknown", "ocsp", fresh.ocsp_url)
    assert [(f.source, f.kind) for f in r.failures] == [("ocsp", "unknown"), ("crl", "unavailable")]
    assert codes(r) == {
        "TLS-OCSP-UNKNOWN": Severity.WARNING,
        "TLS-REVOCATION-UNAVAILABLE": Severity.UNKNOWN,
    }


def test_responder_that_never_answers_times_out(fresh: OcspLab) -> None:
    fresh.stop_responder()
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", fresh.ocsp_port))
        silent.listen(8)  # accepts (in the kernel) and never says a word
        r = check(fresh, fresh.good, timeout=0.5)
    assert (r.status, r.source) == ("good", "crl")
    assert r.failures[0].kind == "unavailable"
    assert "0.5" in r.failures[0].message


def test_crl_from_another_issuer_is_invalid(fresh: OcspLab) -> None:
    root_crl = (fresh.folder / "www" / "root.crl").read_bytes()
    fresh.stop_crl_server()
    with responder(fresh.http_port, lambda method, path, body: (200, root_crl)):
        r = check(fresh, fresh.crl_only_good)
    assert r.status == "unavailable"
    assert codes(r) == {
        "TLS-CRL-INVALID": Severity.WARNING,
        "TLS-REVOCATION-UNAVAILABLE": Severity.UNKNOWN,
    }
    assert "not by the issuer" in r.failures[0].message


def test_garbage_crl_is_invalid(fresh: OcspLab) -> None:
    fresh.stop_crl_server()
    with responder(fresh.http_port, lambda method, path, body: (200, b"<html>moved</html>")):
        r = check(fresh, fresh.revoked_crl_only)
    assert r.status == "unavailable"
    assert [(f.source, f.kind) for f in r.failures] == [("crl", "invalid")]


def test_after_next_update_ocsp_is_stale_and_crl_is_stale(lab: OcspLab) -> None:
    later = now() + datetime.timedelta(days=8)  # past the responder's hour and the CRL's week
    good = check(lab, lab.good, at=later)
    assert good.status == "unavailable"
    assert codes(good) == {
        "TLS-OCSP-INVALID": Severity.WARNING,
        "TLS-CRL-STALE": Severity.WARNING,
        "TLS-REVOCATION-UNAVAILABLE": Severity.UNKNOWN,
    }
    assert exit_status(revocation_findings(good, ENDPOINT)) == 1
    # A listed serial stays revoked however old the list.
    revoked = check(lab, lab.revoked, at=later)
    assert (revoked.status, revoked.source) == ("revoked", "crl")
    assert set(codes(revoked)) == {"TLS-REVOKED", "TLS-OCSP-INVALID", "TLS-CRL-STALE"}


def test_crl_is_fetched_once_for_many_certificates(lab: OcspLab) -> None:
    real = fetcher()
    urls: list[str] = []

    async def counting(method: str, url: str, body: bytes | None, kind: str) -> tuple[int, bytes]:
        urls.append(url)
        return await real(method, url, body, kind)

    cache = CrlCache()

    async def both() -> list[Revocation]:
        return list(
            await asyncio.gather(
                *(
                    check_revocation(
                        leaf.load(), lab.issuer(), counting, now=now(), timeout=5, crl_cache=cache
                    )
                    for leaf in (lab.crl_only_good, lab.revoked_crl_only, lab.crl_only_good)
                )
            )
        )

    found = asyncio.run(both())
    assert [r.status for r in found] == ["good", "revoked", "good"]
    assert urls == [lab.crl_url]


# ------------------------------------------------------------------------ answers not to trust


def test_tampered_signature_is_invalid_then_crl(fresh: OcspLab) -> None:
    def tampered(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return 200, flip_signature_byte(fresh.respond(body))

    with instead_of_responder(fresh, tampered) as seen:
        good = check(fresh, fresh.good)
        revoked = check(fresh, fresh.revoked)
    assert seen == ["POST", "POST"]
    assert (good.status, good.source) == ("good", "crl")
    assert good.failures[0].kind == "invalid"
    assert "signature does not verify" in good.failures[0].message
    assert codes(good) == {"TLS-OCSP-INVALID": Severity.WARNING}
    assert (revoked.status, revoked.source) == ("revoked", "crl")


def test_expired_response_is_invalid_then_crl(fresh: OcspLab) -> None:
    stale = fresh.staple_stale.read_bytes()
    with instead_of_responder(fresh, lambda method, path, body: (200, stale)):
        r = check(fresh, fresh.good)
    assert (r.status, r.source) == ("good", "crl")
    assert [(f.source, f.kind) for f in r.failures] == [("ocsp", "stale")]
    assert "nextUpdate" in r.failures[0].message
    assert codes(r) == {"TLS-OCSP-INVALID": Severity.WARNING}


def test_response_signed_by_a_leaf_is_invalid(fresh: OcspLab) -> None:
    forged = signed_response(
        fresh, fresh.good, signer=fresh.crl_only_good.load(), key=leaf_key(fresh.crl_only_good)
    )
    with instead_of_responder(fresh, lambda method, path, body: (200, forged)):
        r = check(fresh, fresh.good)
    assert r.source == "crl"
    assert "OCSPSigning" in r.failures[0].message


def test_response_signed_by_a_foreign_ca_is_invalid(fresh: OcspLab, tmp_path: Path) -> None:
    other = TestCA(tmp_path)
    issued = other.issue("ocsp.other.test")
    forged = signed_response(
        fresh,
        fresh.good,
        signer=x509.load_pem_x509_certificate(issued.leaf.read_bytes()),
        key=leaf_key(LabCert("x", issued.leaf, issued.key, issued.chain, 0)),
    )
    with instead_of_responder(fresh, lambda method, path, body: (200, forged)):
        r = check(fresh, fresh.good)
    assert r.source == "crl"
    assert "not issued by" in r.failures[0].message


def test_answer_about_another_certificate_is_invalid(fresh: OcspLab) -> None:
    other = fresh.staple_revoked.read_bytes()
    with instead_of_responder(fresh, lambda method, path, body: (200, other)):
        r = check(fresh, fresh.good)
    assert (r.status, r.source) == ("good", "crl")
    assert "no answer about this certificate" in r.failures[0].message


def test_wrong_nonce_is_invalid(fresh: OcspLab) -> None:
    forged = signed_response(fresh, fresh.good, nonce=b"\x00" * 16)
    with instead_of_responder(fresh, lambda method, path, body: (200, forged)):
        r = check(fresh, fresh.good)
    assert r.source == "crl"
    assert "nonce" in r.failures[0].message


def test_echoed_nonce_is_accepted(fresh: OcspLab) -> None:
    def echoing(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        sent = ocsp.load_der_ocsp_request(body).extensions.get_extension_for_class(x509.OCSPNonce)
        return 200, signed_response(fresh, fresh.good, nonce=sent.value.nonce)

    with instead_of_responder(fresh, echoing):
        r = check(fresh, fresh.good)
    assert (r.status, r.source, r.failures) == ("good", "ocsp", ())


def test_responder_busy_is_unavailable(fresh: OcspLab) -> None:
    busy = (
        ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        .public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    with instead_of_responder(fresh, lambda method, path, body: (200, busy)):
        r = check(fresh, fresh.good)
    assert (r.status, r.source) == ("good", "crl")
    assert codes(r) == {"TLS-OCSP-UNAVAILABLE": Severity.WARNING}


def test_get_only_responder_is_asked_with_get(fresh: OcspLab) -> None:
    def get_only(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if method != "GET":
            return 405, b""
        return 200, fresh.respond(base64.b64decode(urllib.parse.unquote(path.rsplit("/", 1)[1])))

    with instead_of_responder(fresh, get_only) as seen:
        r = check(fresh, fresh.revoked)
    assert seen == ["POST", "GET"]
    assert (r.status, r.source) == ("revoked", "ocsp")


# ------------------------------------------------------------------------ staples


def test_stapled_good_response_verifies(lab: OcspLab) -> None:
    r = verify_staple(lab.staple_good.read_bytes(), lab.good.load(), lab.issuer(), now=now())
    assert (r.status, r.source, r.failures) == ("good", "staple", ())
    assert "stapled" in r.detail
    assert revocation_findings(r, ENDPOINT) == []


def test_stapled_revoked_response_verifies(lab: OcspLab) -> None:
    r = verify_staple(lab.staple_revoked.read_bytes(), lab.revoked.load(), lab.issuer(), now=now())
    assert (r.status, r.source, r.reason) == ("revoked", "staple", "keyCompromise")
    findings = revocation_findings(r, ENDPOINT)
    assert [f.code for f in findings] == ["TLS-REVOKED"]
    assert "stapled" in findings[0].message


def test_stapled_must_staple_response_verifies(lab: OcspLab) -> None:
    r = verify_staple(
        lab.staple_must_staple.read_bytes(), lab.must_staple.load(), lab.issuer(), now=now()
    )
    assert (r.status, r.source) == ("good", "staple")


def test_stale_staple_is_invalid(lab: OcspLab) -> None:
    r = verify_staple(lab.staple_stale.read_bytes(), lab.good.load(), lab.issuer(), now=now())
    assert (r.status, r.source) == ("unavailable", "staple")
    assert codes(r) == {"TLS-STAPLE-INVALID": Severity.WARNING}


def test_staple_for_another_certificate_is_invalid(lab: OcspLab) -> None:
    r = verify_staple(lab.staple_good.read_bytes(), lab.revoked.load(), lab.issuer(), now=now())
    assert r.status == "unavailable"
    assert "no answer about this certificate" in r.detail


def test_tampered_staple_is_invalid(lab: OcspLab) -> None:
    der = flip_signature_byte(lab.staple_good.read_bytes())
    r = verify_staple(der, lab.good.load(), lab.issuer(), now=now())
    assert r.status == "unavailable"
    assert [(f.source, f.kind) for f in r.failures] == [("staple", "invalid")]


# ------------------------------------------------------------------------ hostile bytes


@pytest.fixture(scope="module")
def material(lab: OcspLab) -> tuple[x509.Certificate, x509.Certificate, bytes]:
    return lab.good.load(), lab.issuer(), lab.staple_good.read_bytes()


@settings(
    max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(data=st.binary(max_size=2048))
@example(data=b"")
@example(data=b"\x30\x03\x0a\x01\x00")  # successful status, no responseBytes
@example(data=b"\x30\x03\x0a\x01\x03")  # tryLater
def test_arbitrary_bytes_never_raise(
    material: tuple[x509.Certificate, x509.Certificate, bytes], data: bytes
) -> None:
    leaf, issuer, _ = material
    r = verify_staple(data, leaf, issuer, now=now())
    assert r.status in ("unavailable", "unknown")
    assert r.detail
    assert r.failures


@settings(
    max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.data())
def test_damaged_real_staple_never_raises(
    material: tuple[x509.Certificate, x509.Certificate, bytes], data: st.DataObject
) -> None:
    leaf, issuer, good = material
    at = data.draw(st.integers(0, len(good) - 1))
    damaged = bytearray(good)
    if data.draw(st.booleans()):
        damaged[at] ^= data.draw(st.integers(1, 255))
    else:
        del damaged[at:]
    r = verify_staple(bytes(damaged), leaf, issuer, now=now())
    assert r.status != "revoked"
    assert r.detail
    assert r.status == "good" or r.failures  # a byte outside the signed part may not matter


@settings(
    max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(body=st.binary(max_size=1024), status=st.sampled_from([200, 404, 500]))
def test_responder_bytes_never_raise(
    material: tuple[x509.Certificate, x509.Certificate, bytes], body: bytes, status: int
) -> None:
    """Whatever a responder and a CRL server send, the verdict is a value."""
    leaf, issuer, _ = material

    async def answers(method: str, url: str, sent: bytes | None, kind: str) -> tuple[int, bytes]:
        return status, body

    r = asyncio.run(check_revocation(leaf, issuer, answers, now=now(), timeout=1))
    assert r.status == "unavailable"
    assert {f.source for f in r.failures} == {"ocsp", "crl"}
    assert codes(r)["TLS-REVOCATION-UNAVAILABLE"] is Severity.UNKNOWN


@settings(
    max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.data())
def test_damaged_real_crl_never_raises(lab: OcspLab, data: st.DataObject) -> None:
    crl = lab.crl.read_bytes()
    at = data.draw(st.integers(0, len(crl) - 1))
    damaged = bytearray(crl)
    if data.draw(st.booleans()):
        damaged[at] ^= data.draw(st.integers(1, 255))
    else:
        del damaged[at:]

    async def answers(method: str, url: str, sent: bytes | None, kind: str) -> tuple[int, bytes]:
        return 200, bytes(damaged)

    leaf = lab.crl_only_good.load()
    r = asyncio.run(check_revocation(leaf, lab.issuer(), answers, now=now(), timeout=1))
    assert r.status in ("good", "unavailable")
    assert r.detail
    assert r.status == "good" or r.failures


def test_fetcher_that_raises_is_unavailable(material: tuple[x509.Certificate, ...]) -> None:
    leaf, issuer, _ = material

    async def broken(method: str, url: str, sent: bytes | None, kind: str) -> tuple[int, bytes]:
        raise RuntimeError("proxy exploded")

    r = asyncio.run(check_revocation(leaf, issuer, broken, now=now(), timeout=1))
    assert r.status == "unavailable"
    assert "proxy exploded" in r.detail


# ------------------------------------------------------------------------ the HTTP fetcher


def test_http_fetch_follows_a_redirect_to_the_crl(lab: OcspLab) -> None:
    port = free_port()

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", lab.crl_url)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Redirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        status, body = fetch_now(fetcher(), "GET", f"http://127.0.0.1:{port}/crl")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert status == 200
    assert body == lab.crl.read_bytes()


def test_http_fetch_bounds_the_body(lab: OcspLab) -> None:
    small = http_fetch(Network(Resolver()), max_body=100)
    with pytest.raises(FetchError, match="limit"):
        fetch_now(small, "GET", lab.crl_url)


def test_http_fetch_says_why_it_failed() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(FetchError, match=f"127.0.0.1:{port}"):
        fetch_now(fetcher(), "GET", f"http://127.0.0.1:{port}/x.crl")


# ------------------------------------------------------------------------ the codes


def test_every_code_is_documented_with_a_severity() -> None:
    assert set(CODES) == set(SEVERITIES)
    for code, text in CODES.items():
        assert code.startswith("TLS-")
        assert code.upper() == code
        assert len(text) > 150, code  # what, why and how to fix
    assert SEVERITIES["TLS-REVOKED"] is Severity.ERROR
    assert SEVERITIES["TLS-REVOCATION-UNAVAILABLE"] is Severity.UNKNOWN
    assert all(s is not Severity.ERROR for code, s in SEVERITIES.items() if code != "TLS-REVOKED")
