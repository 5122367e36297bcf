"""The audit's scanner against real servers (nginx, Dovecot, Postfix, openssl s_server) and
against hostile sockets that misbehave in every way the scanner must survive.

Certificates come from a throw-away CA; an RSA-1024 SHA-1 self-signed one, which no verifying
client accepts, is made with the openssl command. Everything listens on 127.0.0.x; the one case
about an unroutable IPv6 address runs in a network namespace of its own, so nothing leaves the
machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

from mailwarden.audit.model import Endpoint, Observation, Protocol, TlsMode
from mailwarden.audit.scan import scan, scan_all
from mailwarden.discovery.mailcaps import MAX_LINE, MAX_LINES
from tests.fixtures.dovecot import Dovecot, running_dovecot
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.nginx import NginxServer, Vhost, running_nginx
from tests.fixtures.submission import SubmissionServer, running_submission
from tests.fixtures.tls_ca import ServerCert, TestCA

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # starts nginx, dovecot, postfix

EHLO = "audit.example.test"
IMAP = "imap.example.test"
POP = "pop.example.test"
SMTP = "smtp.example.test"
WWW = "autoconfig.example.test"
EXPIRED = "old.example.test"
ELSEWHERE = "other.example.test"
WEAK = "weak.example.test"
OPENSSL = "/usr/bin/openssl"


def endpoint(
    host: str, address: str, port: int, protocol: Protocol, tls: TlsMode = "implicit"
) -> Endpoint:
    return Endpoint(host, address, port, protocol, tls, names=(host,))


def fingerprint(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())


def pem_fingerprint(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256())


# --- real servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("audit-ca"))


@pytest.fixture(scope="module")
def good_cert(ca: TestCA) -> ServerCert:
    return ca.issue("mail.example.test", IMAP, POP, SMTP, WWW)


@pytest.fixture(scope="module")
def dovecot(good_cert: ServerCert) -> Iterator[Dovecot]:
    with running_dovecot(good_cert) as server:
        yield server


@pytest.fixture(scope="module")
def plaintext_dovecot(good_cert: ServerCert) -> Iterator[Dovecot]:
    with running_dovecot(good_cert, plaintext_auth=True) as server:
        yield server


@pytest.fixture(scope="module")
def submission(good_cert: ServerCert, dovecot: Dovecot) -> Iterator[SubmissionServer]:
    with running_submission(good_cert, dovecot.auth_socket) as server:
        yield server


@pytest.fixture(scope="module")
def nginx(
    ca: TestCA, good_cert: ServerCert, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxServer]:
    vhosts = [
        Vhost((WWW,), good_cert, content_type="text/html"),
        Vhost((EXPIRED,), ca.issue(EXPIRED, expired=True), content_type="text/html"),
        Vhost((ELSEWHERE,), ca.issue("elsewhere.example.test"), content_type="text/html"),
    ]
    with running_nginx(vhosts, tmp_path_factory.mktemp("audit-nginx")) as server:
        yield server


def _require_openssl() -> None:
    if not Path(OPENSSL).exists():
        pytest.fail(
            f"{OPENSSL} is missing: install openssl (packaging/debian-test.txt; make test does)",
            pytrace=False,
        )


class WeakServer:
    """``openssl s_server`` with a self-signed RSA-1024 SHA-1 certificate, TLS 1.0 to 1.3 at
    security level 0, stapling a fixed OCSP response: what the scanner must still read."""

    def __init__(self, folder: Path, port: int, cert: Path, staple: bytes) -> None:
        self.folder = folder
        self.port = port
        self.cert = cert
        self.staple = staple


@pytest.fixture(scope="module")
def weak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeakServer]:
    _require_openssl()
    folder = tmp_path_factory.mktemp("weak-server")
    cert, key = folder / "weak.pem", folder / "weak.key"
    made = subprocess.run(
        [
            *(OPENSSL, "req", "-x509", "-newkey", "rsa:1024", "-sha1", "-nodes", "-days", "2"),
            *("-subj", f"/CN={WEAK}", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == "sha1"
    signing_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(signing_key, rsa.RSAPrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=certificate,
            issuer=certificate,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + datetime.timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, certificate)
        .sign(signing_key, hashes.SHA256())
    )
    staple = response.public_bytes(serialization.Encoding.DER)
    (folder / "staple.der").write_bytes(staple)
    port = free_port()
    with (folder / "s_server.out").open("wb") as out:
        proc = subprocess.Popen(
            [
                *(OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert)),
                *("-key", str(key), "-cipher", "ALL:@SECLEVEL=0", "-min_protocol", "TLSv1"),
                *("-status_file", str(folder / "staple.der"), "-www", "-quiet"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, alive=lambda: proc.poll() is None, timeout=15)
        yield WeakServer(folder, port, cert, staple)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- what real servers show ----------------------------------------------------------------


def test_https_chain_as_sent(nginx: NginxServer, good_cert: ServerCert, ca: TestCA) -> None:
    seen = scan(endpoint(WWW, "127.0.0.1", nginx.https_port, "https"), ehlo_name=EHLO)
    assert seen.ok, seen.error
    assert seen.error_kind is None
    assert [fingerprint(der) for der in seen.chain] == [
        pem_fingerprint(good_cert.leaf),
        pem_fingerprint(ca.intermediate),
    ]
    assert seen.staple is None  # nginx staples only with ssl_stapling on
    assert seen.tls_version == "TLSv1.3"
    assert seen.cipher is not None
    assert seen.cipher.startswith("TLS_")
    assert seen.legacy_versions == ()  # ssl_protocols TLSv1.2 TLSv1.3
    assert seen.mechanisms == seen.capabilities_before_tls == seen.plaintext_auth_before_tls == ()
    assert 0 < seen.ms < 5000


@pytest.mark.parametrize("host", [EXPIRED, ELSEWHERE])
def test_certificates_no_client_accepts_are_still_read(
    host: str, nginx: NginxServer, ca: TestCA
) -> None:
    seen = scan(endpoint(host, "127.0.0.1", nginx.https_port, "https"), ehlo_name=EHLO)
    assert seen.ok, seen.error
    leaf = x509.load_der_x509_certificate(seen.chain[0])
    if host == EXPIRED:
        assert leaf.not_valid_after_utc < datetime.datetime.now(datetime.UTC)
    else:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["elsewhere.example.test"]
    assert fingerprint(seen.chain[1]) == pem_fingerprint(ca.intermediate)


def test_unknown_name_is_a_handshake_failure(nginx: NginxServer) -> None:
    """nginx's default TLS server refuses names it does not serve (ssl_reject_handshake)."""
    seen = scan(
        endpoint("nobody.example.test", "127.0.0.1", nginx.https_port, "https"), ehlo_name=EHLO
    )
    assert seen.error_kind == "handshake"
    assert seen.error is not None
    assert "unrecognized name" in seen.error
    assert seen.chain == ()


def test_weak_self_signed_server_with_legacy_versions_and_staple(weak_server: WeakServer) -> None:
    seen = scan(endpoint(WEAK, "127.0.0.1", weak_server.port, "https"), ehlo_name=EHLO)
    assert seen.ok, seen.error
    assert [fingerprint(der) for der in seen.chain] == [pem_fingerprint(weak_server.cert)]
    key = x509.load_der_x509_certificate(seen.chain[0]).public_key()
    assert getattr(key, "key_size", None) == 1024
    assert seen.staple == weak_server.staple
    assert seen.legacy_versions == ("TLSv1", "TLSv1.1")
    assert seen.tls_version == "TLSv1.3"


def test_legacy_probes_can_be_skipped(weak_server: WeakServer) -> None:
    seen = scan(
        endpoint(WEAK, "127.0.0.1", weak_server.port, "https"), ehlo_name=EHLO, legacy=False
    )
    assert seen.ok, seen.error
    assert seen.legacy_versions == ()
    assert seen.staple == weak_server.staple


def mail_endpoints(dovecot: Dovecot, submission: SubmissionServer | None) -> dict[str, Endpoint]:
    found = {
        "imap-starttls": endpoint(IMAP, dovecot.address, dovecot.imap, "imap", "starttls"),
        "imaps": endpoint(IMAP, dovecot.address, dovecot.imaps, "imap"),
        "pop3-stls": endpoint(POP, dovecot.address, dovecot.pop3, "pop3", "starttls"),
        "pop3s": endpoint(POP, dovecot.address, dovecot.pop3s, "pop3"),
    }
    if submission is not None:
        found["smtp-587"] = endpoint(SMTP, "127.0.0.1", submission.starttls, "smtp", "starttls")
        found["smtp-465"] = endpoint(SMTP, "127.0.0.1", submission.implicit, "smtp")
    return found


@pytest.mark.parametrize(
    "name", ["imap-starttls", "imaps", "pop3-stls", "pop3s", "smtp-587", "smtp-465"]
)
def test_mail_servers(
    name: str,
    dovecot: Dovecot,
    submission: SubmissionServer,
    good_cert: ServerCert,
    ca: TestCA,
) -> None:
    target = mail_endpoints(dovecot, submission)[name]
    seen = scan(target, ehlo_name=EHLO)
    assert seen.ok, seen.error
    assert [fingerprint(der) for der in seen.chain] == [
        pem_fingerprint(good_cert.leaf),
        pem_fingerprint(ca.intermediate),
    ]
    assert seen.staple is None  # Dovecot and Postfix do not staple
    assert seen.tls_version in ("TLSv1.2", "TLSv1.3")
    assert seen.mechanisms == ("PLAIN", "LOGIN")
    assert seen.plaintext_auth_before_tls == ()
    assert seen.mechanisms_before_tls == ()
    if target.protocol == "smtp":
        # encrypt uses smtpd_tls_mandatory_protocols, ">=TLSv1" by default: a real finding,
        # and the legacy probes redo the STARTTLS dialogue on 587.
        assert seen.legacy_versions == ("TLSv1", "TLSv1.1")
    else:
        assert seen.legacy_versions == ()  # ssl_min_protocol = TLSv1.2
    if target.tls == "starttls":
        word = "STLS" if target.protocol == "pop3" else "STARTTLS"
        assert word in seen.capabilities_before_tls
    else:
        assert seen.capabilities_before_tls == ()


def test_plaintext_auth_before_starttls(plaintext_dovecot: Dovecot) -> None:
    targets = mail_endpoints(plaintext_dovecot, None)
    imap = scan(targets["imap-starttls"], ehlo_name=EHLO)
    pop3 = scan(targets["pop3-stls"], ehlo_name=EHLO)
    assert imap.ok, imap.error
    assert pop3.ok, pop3.error
    assert imap.plaintext_auth_before_tls == (
        "AUTH=PLAIN",
        "AUTH=LOGIN",
        "LOGIN without LOGINDISABLED",
    )
    assert imap.mechanisms_before_tls == ("PLAIN", "LOGIN")
    assert pop3.plaintext_auth_before_tls == ("USER", "SASL PLAIN", "SASL LOGIN")
    assert imap.mechanisms == pop3.mechanisms == ("PLAIN", "LOGIN")


def test_implicit_tls_to_a_plain_text_port(dovecot: Dovecot) -> None:
    seen = scan(endpoint(IMAP, dovecot.address, dovecot.imap, "imap"), ehlo_name=EHLO)
    assert seen.error_kind == "protocol"
    assert seen.error is not None
    assert "does not speak TLS" in seen.error


def test_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # bound, not listening: the connection is refused
        seen = scan(endpoint(SMTP, "127.0.0.1", port, "smtp", "starttls"), ehlo_name=EHLO)
    assert seen.error_kind == "connect"
    assert seen.error == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_not_an_address_is_never_resolved() -> None:
    seen = scan(endpoint(SMTP, "localhost", 25, "smtp", "starttls"), ehlo_name=EHLO)
    assert seen.error_kind == "connect"
    assert seen.error == "not an IP address: 'localhost'"


def test_bad_ehlo_name_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="EHLO"):
        scan(endpoint(SMTP, "127.0.0.1", 9, "smtp", "starttls"), ehlo_name="a\r\nRSET")


_NO_ROUTE_SCRIPT = """
from mailwarden.audit.model import Endpoint
from mailwarden.audit.scan import scan
seen = scan(Endpoint("mx.example.test", "2001:db8::25", 25, "smtp", "starttls"),
            timeout=3, ehlo_name="audit.example.test")
print(seen.error_kind)
print(seen.error)
"""


@pytest.mark.parametrize("loopback", ["down", "up"])
def test_ipv6_without_a_route_is_no_route(loopback: str) -> None:
    """A host with no IPv6 route: run in a fresh network namespace (no interface but ``lo``),
    so the documentation address 2001:db8::25 is unroutable and nothing is ever sent."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is missing", pytrace=False)
    command = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--map-root-user", "--net"]
    python = [sys.executable, "-c", _NO_ROUTE_SCRIPT]
    if loopback == "up":  # ::1 exists, but there is no route to 2001:db8::/32
        ip = shutil.which("ip") or "/usr/sbin/ip"
        command += ["sh", "-c", f'"{ip}" link set lo up && exec "$0" "$@"', *python]
    else:
        command += python
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    kind, message = done.stdout.splitlines()
    assert kind == "no-route"
    assert message.startswith("cannot reach [2001:db8::25]:25 from this host (")
    assert message.endswith("): no IPv6 route")


# --- hostile servers -----------------------------------------------------------------------


class Peak:
    """Simultaneous connections, now and at most, possibly shared by several servers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


Script = Callable[["Client"], None]


class Client:
    """One accepted connection as a script sees it; every command received is logged.

    ``release``: the script is done holding the connection (counted as busy from the accept
    until then, or until the script ends). Releasing when the last reply is sent, before the
    client closes, means the count can only be lower than the client's real number of open
    connections, never higher because a thread noticed a close late.
    """

    def __init__(
        self,
        conn: socket.socket,
        stop: threading.Event,
        log: list[str],
        release: Callable[[], None],
    ) -> None:
        self.conn = conn
        self.stop = stop
        self.log = log
        self.release = release
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def send_forever(self, data: bytes) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.conn.sendall(data)

    def line(self) -> str:
        """The next command; "" once the client has gone (or the test ends)."""
        while b"\n" not in self.buffer:
            if self.stop.is_set():
                return ""
            try:
                chunk = self.conn.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                return ""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        text = line.rstrip(b"\r").decode("ascii", "replace")
        self.log.append(text)
        return text

    def raw(self) -> bytes:
        """Whatever the client sends next (a ClientHello…)."""
        while not self.stop.is_set():
            try:
                return self.conn.recv(4096)
            except TimeoutError:
                continue
        return b""

    def until_gone(self) -> None:
        while self.line():
            pass


class ScriptedServer:
    """A TCP server on ``address`` running ``script`` for every connection, each in a thread."""

    def __init__(self, script: Script, address: str = "127.0.0.1", peak: Peak | None = None):
        self.script = script
        self.address = address
        self.stop = threading.Event()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.listener = socket.create_server((address, 0), family=family, backlog=64)
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.threads: list[threading.Thread] = []
        self.log: list[str] = []
        self.peak = Peak()
        self.shared = peak
        self.connections = 0

    def __enter__(self) -> ScriptedServer:
        accepter = threading.Thread(target=self._accept, daemon=True)
        accepter.start()
        self.threads.append(accepter)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()
        assert not any(t.is_alive() for t in self.threads), "a scripted connection did not end"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            for peak in (self.peak, self.shared):
                if peak is not None:
                    peak.enter()
            conn.settimeout(0.05)
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                for peak in (self.peak, self.shared):
                    if peak is not None:
                        peak.leave()

        try:
            with conn, contextlib.suppress(OSError):  # the client went away: scripts expect it
                self.script(Client(conn, self.stop, self.log, release))
        finally:
            release()

    def endpoint(self, protocol: Protocol, tls: TlsMode = "starttls", host: str = "") -> Endpoint:
        name = host or {"imap": IMAP, "pop3": POP, "smtp": SMTP, "https": WWW}[protocol]
        return endpoint(name, self.address, self.port, protocol, tls)


def silent(client: Client) -> None:
    """Accepts, then never says anything, nor reads."""
    client.stop.wait()


def timed(target: Endpoint, timeout: float) -> tuple[Observation, float]:
    started = time.monotonic()
    seen = scan(target, timeout=timeout, ehlo_name=EHLO)
    return seen, time.monotonic() - started


@pytest.mark.parametrize(
    ("protocol", "tls"), [("imap", "starttls"), ("smtp", "implicit"), ("https", "implicit")]
)
def test_server_that_never_speaks(protocol: Protocol, tls: TlsMode) -> None:
    with ScriptedServer(silent) as server:
        seen, elapsed = timed(server.endpoint(protocol, tls), 1.0)
    assert 0.9 < elapsed < 1.5
    assert seen.error_kind == "timeout"
    waited = "the greeting" if tls == "starttls" else "the TLS handshake"
    assert seen.error == f"timed out after 1 s waiting for {waited}"


def greets(greeting: bytes) -> Script:
    def script(client: Client) -> None:
        client.send(greeting)
        client.until_gone()

    return script


@pytest.mark.parametrize(
    ("protocol", "greeting", "said"),
    [
        (
            "smtp",
            b"421 4.3.2 smtp.example.test busy, try later\r\n",
            "421 4.3.2 smtp.example.test busy, try later",
        ),
        ("smtp", b"450-greylisted\r\n450 4.7.1 come back later\r\n", "450 greylisted"),
        ("imap", b"* BYE Too many connections\r\n", "'* BYE Too many connections'"),
        ("pop3", b"-ERR [SYS/TEMP] busy\r\n", "'-ERR [SYS/TEMP] busy'"),
    ],
)
def test_busy_server_refuses_service(protocol: Protocol, greeting: bytes, said: str) -> None:
    with ScriptedServer(greets(greeting)) as server:
        seen = scan(server.endpoint(protocol), ehlo_name=EHLO)
    assert seen.error_kind == "refused-service"
    assert seen.error == f"the server refuses service: {said}"
    assert server.log == []  # nothing sent to a server that said no


@pytest.mark.parametrize(
    ("protocol", "greeting", "said"),
    [
        ("smtp", b"\x00\x01\xfe\xff garbage\r\n", "expected an SMTP reply code"),
        ("imap", b"HTTP/1.1 400 Bad Request\r\n", "expected an IMAP greeting"),
        ("pop3", b"SSH-2.0-OpenSSH_9.2\r\n", "expected a POP3 greeting"),
        ("smtp", b"\x15\x03\x03\x00\x02\x02\x28", "port 1 speaks implicit TLS, not STARTTLS"),
    ],
)
def test_garbage_where_a_greeting_belongs(protocol: Protocol, greeting: bytes, said: str) -> None:
    with ScriptedServer(greets(greeting)) as server:
        seen = scan(server.endpoint(protocol), ehlo_name=EHLO)
        said = said.replace("port 1 ", f"port {server.port} ")
    assert seen.error_kind == "protocol"
    assert seen.error is not None
    assert said in seen.error


def endless_line(client: Client) -> None:
    client.send(b"220 ")
    client.send_forever(b"A" * 4096)


def endless_capabilities(protocol: Protocol) -> Script:
    greeting, reply = {
        "imap": (b"* OK ready\r\n", b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n"),
        "pop3": (b"+OK ready\r\n", b"+OK\r\n" + b"STLS\r\n" * 10_000),
        "smtp": (b"220 ready\r\n", b"250-STARTTLS\r\n"),
    }[protocol]

    def script(client: Client) -> None:
        client.send(greeting)
        client.line()
        client.send_forever(reply)

    return script


def test_endless_line() -> None:
    with ScriptedServer(endless_line) as server:
        seen, elapsed = timed(server.endpoint("smtp"), 5.0)
    assert elapsed < 1.0  # refused at 8 KiB, not when the time is up
    assert seen.error_kind == "protocol"
    assert seen.error == f"a line longer than {MAX_LINE} bytes in the SMTP greeting"


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_endless_capability_list(protocol: Protocol) -> None:
    with ScriptedServer(endless_capabilities(protocol)) as server:
        seen, elapsed = timed(server.endpoint(protocol), 5.0)
    assert elapsed < 1.0
    assert seen.error_kind == "protocol"
    assert seen.error is not None
    assert f"more than {MAX_LINES} lines" in seen.error


def smtp_without_starttls(client: Client) -> None:
    client.send(b"220 smtp.example.test ESMTP\r\n")
    while command := client.line():
        if command.startswith("EHLO "):
            client.send(b"250-smtp.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
        elif command == "QUIT":
            client.send(b"221 2.0.0 bye\r\n")
            return
        else:
            client.send(b"502 5.5.2 no\r\n")


def test_starttls_not_offered() -> None:
    with ScriptedServer(smtp_without_starttls) as server:
        seen = scan(server.endpoint("smtp"), ehlo_name=EHLO)
    assert seen.error_kind == "starttls"
    assert seen.error == "STARTTLS not offered (capabilities: AUTH 8BITMIME)"
    assert seen.capabilities_before_tls == ("AUTH", "8BITMIME")
    assert seen.mechanisms_before_tls == ("PLAIN", "LOGIN")
    assert seen.plaintext_auth_before_tls == ("AUTH PLAIN", "AUTH LOGIN")
    assert server.log == [f"EHLO {EHLO}", "QUIT"]  # politely, and never a credential


def imap_refusing_starttls(client: Client) -> None:
    client.send(b"* OK ready\r\n")
    while line := client.line():
        tag, _, command = line.partition(" ")
        if command == "CAPABILITY":
            client.send(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n" + tag.encode())
            client.send(b" OK done\r\n")
        elif command == "STARTTLS":
            client.send(tag.encode() + b" NO [UNAVAILABLE] TLS is not configured\r\n")
        elif command == "LOGOUT":
            client.send(b"* BYE bye\r\n" + tag.encode() + b" OK\r\n")
            return


def test_starttls_refused() -> None:
    with ScriptedServer(imap_refusing_starttls) as server:
        seen = scan(server.endpoint("imap"), ehlo_name=EHLO)
    assert seen.error_kind == "starttls"
    assert seen.error == "STARTTLS refused: 'NO [UNAVAILABLE] TLS is not configured'"
    assert seen.plaintext_auth_before_tls == ()
    assert server.log == ["a1 CAPABILITY", "a2 STARTTLS", "a3 LOGOUT"]


def truncated_handshake(then_silent: bool) -> Script:
    def script(client: Client) -> None:
        client.raw()  # the ClientHello
        client.send(b"\x16\x03\x03\x40\x00" + b"\x02\x00\x3f\xfc\x03\x03" + b"\x00" * 20)
        if then_silent:
            client.stop.wait()

    return script


@pytest.mark.parametrize("then_silent", [False, True])
def test_truncated_handshake(then_silent: bool) -> None:
    with ScriptedServer(truncated_handshake(then_silent)) as server:
        seen, elapsed = timed(server.endpoint("imap", "implicit"), 1.0)
    assert elapsed < 1.5
    if then_silent:
        assert seen.error_kind == "timeout"
        assert seen.error == "timed out after 1 s waiting for the TLS handshake"
    else:
        assert seen.error_kind == "handshake"
        assert seen.error == "TLS handshake failed: the server closed the connection"


def test_huge_certificate_chain(weak_server: WeakServer) -> None:
    """A chain far beyond OpenSSL's limit for the certificate message is refused, quickly."""
    folder = weak_server.folder
    chain = folder / "huge-chain.pem"
    chain.write_bytes(weak_server.cert.read_bytes() * 400)  # about 300 KB
    port = free_port()
    proc = subprocess.Popen(
        [
            *(OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(weak_server.cert)),
            *("-key", str(folder / "weak.key"), "-cert_chain", str(chain)),
            *("-cipher", "ALL:@SECLEVEL=0", "-www", "-quiet"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, alive=lambda: proc.poll() is None, timeout=15)
        seen, elapsed = timed(endpoint(WEAK, "127.0.0.1", port, "https"), 5.0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert elapsed < 2.0
    assert seen.error_kind == "handshake"
    assert seen.error == "TLS handshake failed: excessive message size"


# --- many endpoints ------------------------------------------------------------------------


def slow_refusal(client: Client) -> None:
    """Holds the connection for a moment, then says it is busy (like a loaded MX)."""
    client.stop.wait(0.25)
    client.send(b"421 4.3.2 busy\r\n")
    client.release()
    client.until_gone()


def run_all(endpoints: Sequence[Endpoint], **options: object) -> tuple[Observation, ...]:
    async def go() -> tuple[Observation, ...]:
        return await scan_all(endpoints, ehlo_name=EHLO, **options)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_at_most_two_connections_per_server() -> None:
    overall = Peak()
    with (
        ScriptedServer(slow_refusal, "127.0.0.1", overall) as one,
        ScriptedServer(slow_refusal, "127.0.0.3", overall) as two,
    ):
        endpoints = [
            server.endpoint("smtp", host=f"mx{i}.example.test")
            for i in range(6)
            for server in (one, two)
        ]
        seen: list[Observation] = []
        started = time.monotonic()
        results = run_all(endpoints, timeout=5.0, deadline=30.0, per_server=2, progress=seen.append)
        elapsed = time.monotonic() - started
    assert [r.endpoint for r in results] == endpoints
    assert {r.error_kind for r in results} == {"refused-service"}
    assert sorted(seen, key=lambda o: endpoints.index(o.endpoint)) == list(results)
    assert one.connections == two.connections == 6
    assert one.peak.most == two.peak.most == 2
    assert overall.most == 4  # the two servers are scanned at the same time
    assert 0.7 < elapsed < 1.5  # three rounds of 0.25 s, not six


def test_at_most_workers_connections_overall() -> None:
    overall = Peak()
    with (
        ScriptedServer(slow_refusal, "127.0.0.1", overall) as one,
        ScriptedServer(slow_refusal, "127.0.0.3", overall) as two,
    ):
        endpoints = [one.endpoint("smtp"), two.endpoint("smtp")] * 2
        results = run_all(endpoints, timeout=5.0, deadline=30.0, workers=1)
    assert [r.error_kind for r in results] == ["refused-service"] * 4
    assert overall.most == 1


def test_overall_deadline() -> None:
    with ScriptedServer(silent) as server:
        endpoints = [server.endpoint("imap", host=f"imap{i}.example.test") for i in range(6)]
        seen: list[Observation] = []
        started = time.monotonic()
        results = run_all(endpoints, timeout=5.0, deadline=1.0, per_server=2, progress=seen.append)
        elapsed = time.monotonic() - started
        connections = server.connections
    assert elapsed < 1.5
    assert connections == 2
    assert [r.endpoint for r in results] == endpoints
    assert {r.error_kind for r in results} == {"timeout"}
    cut = "timed out after 1 s waiting for the greeting (cut short by the audit's overall "
    assert [r.error for r in results[:2]] == [cut + "deadline of 1 s)"] * 2
    assert [r.error for r in results[2:]] == [
        "not scanned: the audit's overall deadline of 1 s passed first"
    ] * 4
    assert len(seen) == 6


def test_nothing_to_scan() -> None:
    assert run_all([], timeout=1.0, deadline=1.0) == ()


def test_real_servers_at_once(
    nginx: NginxServer, dovecot: Dovecot, submission: SubmissionServer, weak_server: WeakServer
) -> None:
    endpoints = [
        endpoint(WWW, "127.0.0.1", nginx.https_port, "https"),
        endpoint(WEAK, "127.0.0.1", weak_server.port, "https"),
        *mail_endpoints(dovecot, submission).values(),
    ]
    started = time.monotonic()
    results = run_all(endpoints, timeout=10.0, deadline=60.0)
    elapsed = time.monotonic() - started
    assert [r.error for r in results] == [None] * len(endpoints)
    assert [r.endpoint for r in results] == endpoints
    assert results[1].legacy_versions == ("TLSv1", "TLSv1.1")
    assert elapsed < 5.0


def test_ipv6_address() -> None:
    with ScriptedServer(smtp_without_starttls, "::1") as server:
        target = server.endpoint("smtp")
        seen = scan(target, ehlo_name=EHLO)
    assert target.label == f"{SMTP}:{server.port} ([::1])"
    assert seen.error_kind == "starttls"
    assert server.log == [f"EHLO {EHLO}", "QUIT"]
