"""The probe's server check against real Dovecot and Postfix, and against hostile sockets.

Certificates come from a throw-away CA the network is told to trust (``--ca-file``); host names
such as imap.example.test are sent to the local servers by ``--connect-to`` rules, so no DNS
server is involved and TLS still checks the advertised name.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.discovery.mailcaps import (
    MAX_LINE,
    MAX_WORDS,
    Capabilities,
    ProtocolError,
    imap_capabilities,
    pop3_capabilities,
    smtp_capabilities,
    smtp_reply,
)
from mailwarden.discovery.mailserver import (
    CODES,
    EndpointResult,
    MailEndpoint,
    check_endpoints,
)
from mailwarden.discovery.net import Network, parse_connect_to
from mailwarden.discovery.resolver import Resolver
from mailwarden.discovery.steps import Clock, Outcome
from mailwarden.findings import Severity
from tests.fixtures.dovecot import Dovecot, running_dovecot
from tests.fixtures.submission import SubmissionServer, running_submission
from tests.fixtures.tls_ca import ServerCert, TestCA

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # starts dovecot and postfix

CLEARTEXT = ("password-cleartext",)
T = TypeVar("T")
IMAP = "imap.example.test"
POP = "pop.example.test"
SMTP = "smtp.example.test"


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("mail-ca"))


@pytest.fixture(scope="module")
def good_cert(ca: TestCA) -> ServerCert:
    return ca.issue("mail.example.test", IMAP, POP, SMTP)


@pytest.fixture(scope="module")
def dovecot(good_cert: ServerCert) -> Iterator[Dovecot]:
    with running_dovecot(good_cert) as server:
        yield server


@pytest.fixture(scope="module")
def submission(good_cert: ServerCert, dovecot: Dovecot) -> Iterator[SubmissionServer]:
    with running_submission(good_cert, dovecot.auth_socket) as server:
        yield server


@pytest.fixture(scope="module")
def plaintext_dovecot(good_cert: ServerCert) -> Iterator[Dovecot]:
    with running_dovecot(good_cert, plaintext_auth=True) as server:
        yield server


@pytest.fixture(scope="module")
def expired_dovecot(ca: TestCA) -> Iterator[Dovecot]:
    with running_dovecot(ca.issue(IMAP, POP, expired=True)) as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere_dovecot(ca: TestCA) -> Iterator[Dovecot]:
    with running_dovecot(ca.issue("elsewhere.example.test")) as server:
        yield server


def run_checks(
    endpoints: list[MailEndpoint],
    address: str,
    ca_file: Path | None,
    timeout: float = 5.0,
) -> tuple[EndpointResult, ...]:
    """Check ``endpoints`` as the probe does, every name sent to ``address`` (port kept)."""

    async def go() -> tuple[EndpointResult, ...]:
        network = Network(Resolver(), [parse_connect_to(f"::{address}:")], ca_file=ca_file)
        return await check_endpoints(network, endpoints, Clock(), timeout=timeout)

    return asyncio.run(go())


def run_check(
    endpoint: MailEndpoint, address: str, ca_file: Path | None, timeout: float = 5.0
) -> EndpointResult:
    (result,) = run_checks([endpoint], address, ca_file, timeout)
    return result


def codes(result: EndpointResult) -> list[str]:
    return [f.code for f in result.findings]


def only_finding(result: EndpointResult, code: str) -> str:
    """The message of the one problem found, which must have ``code``."""
    problems = [f for f in result.findings if f.severity is not Severity.INFO]
    assert [f.code for f in problems] == [code], result.findings
    assert all(f.subject == result.endpoint.target for f in problems)
    return problems[0].message


# --- good servers --------------------------------------------------------------------------


def good_endpoints(dovecot: Dovecot, submission: SubmissionServer) -> dict[str, MailEndpoint]:
    return {
        "imaps": MailEndpoint("imap", IMAP, dovecot.imaps, "implicit", CLEARTEXT),
        "imap-starttls": MailEndpoint("imap", IMAP, dovecot.imap, "starttls", CLEARTEXT),
        "pop3s": MailEndpoint("pop3", POP, dovecot.pop3s, "implicit", CLEARTEXT),
        "pop3-stls": MailEndpoint("pop3", POP, dovecot.pop3, "starttls", CLEARTEXT),
        "smtp-465": MailEndpoint("smtp", SMTP, submission.implicit, "implicit", CLEARTEXT),
        "smtp-587": MailEndpoint("smtp", SMTP, submission.starttls, "starttls", CLEARTEXT),
    }


@pytest.mark.parametrize(
    "name", ["imaps", "imap-starttls", "pop3s", "pop3-stls", "smtp-465", "smtp-587"]
)
def test_good_servers_pass(
    name: str, dovecot: Dovecot, submission: SubmissionServer, ca: TestCA
) -> None:
    endpoint = good_endpoints(dovecot, submission)[name]
    address = "127.0.0.1" if endpoint.kind == "smtp" else dovecot.address
    result = run_check(endpoint, address, ca.root)
    assert result.ok, result.findings
    assert result.findings == ()
    assert result.mechanisms == ("PLAIN", "LOGIN")
    assert result.tls_version in ("TLSv1.2", "TLSv1.3")
    tls_steps = [s for s in result.steps if s.tls]
    assert len(tls_steps) == 1
    assert f"certificate valid for {endpoint.host}" in (tls_steps[0].tls or "")
    assert all(s.outcome is Outcome.OK for s in result.steps), result.steps
    assert all(s.client == "servers" and s.target == endpoint.target for s in result.steps)
    assert result.steps[-1].action.endswith(("LOGOUT", "QUIT"))
    if endpoint.tls == "starttls":
        # Before TLS the real servers offer no password in clear (what the check relies on).
        before = next(s for s in result.steps if "before TLS" in s.detail)
        after = next(s for s in result.steps if "after TLS" in s.detail)
        assert "SASL: none" in before.detail
        assert "SASL: PLAIN LOGIN" in after.detail
        if endpoint.kind == "imap":
            assert "LOGINDISABLED" in before.detail


def test_all_good_servers_at_once(
    dovecot: Dovecot, submission: SubmissionServer, ca: TestCA
) -> None:
    """The probe checks every server in parallel; the same server named twice is checked once,
    for the union of the authentication methods it was advertised with."""
    endpoints = list(good_endpoints(dovecot, submission).values())
    # All names to 127.0.0.2 would miss Postfix: send the SMTP name to 127.0.0.1 by its own rule.
    duplicate = MailEndpoint("imap", IMAP.upper() + ".", dovecot.imaps, "implicit", ("OAuth2",))

    async def go() -> tuple[EndpointResult, ...]:
        network = Network(
            Resolver(),
            [parse_connect_to(f"{SMTP}::127.0.0.1:"), parse_connect_to(f"::{dovecot.address}:")],
            ca_file=ca.root,
        )
        return await check_endpoints(network, [*endpoints, duplicate], Clock())

    results = asyncio.run(go())
    assert [r.endpoint for r in results[1:]] == endpoints[1:]
    assert results[0].endpoint.auth == ("password-cleartext", "OAuth2")
    assert codes(results[0]) == ["PROBE-SERVER-AUTH-MISSING"]
    assert results[0].findings[0].severity is Severity.WARNING  # cleartext is offered
    assert all(r.ok for r in results[1:])
    started = [r.steps[0].started_ms for r in results]
    finished = [r.steps[-1].started_ms + r.steps[-1].ms for r in results]
    assert max(started) < min(finished), "the checks did not overlap"


# --- TLS mode other than advertised --------------------------------------------------------


@pytest.mark.parametrize("kind", ["imap", "pop3", "smtp"])
def test_starttls_advertised_on_implicit_port(
    kind: str, dovecot: Dovecot, submission: SubmissionServer, ca: TestCA
) -> None:
    port = {"imap": dovecot.imaps, "pop3": dovecot.pop3s, "smtp": submission.implicit}[kind]
    host = {"imap": IMAP, "pop3": POP, "smtp": SMTP}[kind]
    address = "127.0.0.1" if kind == "smtp" else dovecot.address
    endpoint = MailEndpoint(kind, host, port, "starttls", CLEARTEXT)  # type: ignore[arg-type]
    started = time.monotonic()
    result = run_check(endpoint, address, ca.root, timeout=2.0)
    assert time.monotonic() - started < 2.5
    message = only_finding(result, "PROBE-SERVER-TLS-MODE")
    assert "advertised STARTTLS" in message
    assert "speaks implicit TLS" in message


@pytest.mark.parametrize("kind", ["imap", "pop3", "smtp"])
def test_implicit_advertised_on_starttls_port(
    kind: str, dovecot: Dovecot, submission: SubmissionServer, ca: TestCA
) -> None:
    port = {"imap": dovecot.imap, "pop3": dovecot.pop3, "smtp": submission.starttls}[kind]
    host = {"imap": IMAP, "pop3": POP, "smtp": SMTP}[kind]
    address = "127.0.0.1" if kind == "smtp" else dovecot.address
    endpoint = MailEndpoint(kind, host, port, "implicit", CLEARTEXT)  # type: ignore[arg-type]
    result = run_check(endpoint, address, ca.root, timeout=3.0)
    message = only_finding(result, "PROBE-SERVER-TLS-MODE")
    assert "advertised implicit TLS" in message
    assert "speaks plain text" in message
    assert "expects STARTTLS" in message
    greeting = {"imap": "* OK", "pop3": "+OK", "smtp": "220"}[kind]
    assert f"greeting '{greeting}" in message


# --- certificates --------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_expired_certificate(tls: str, expired_dovecot: Dovecot, ca: TestCA) -> None:
    port = expired_dovecot.imaps if tls == "implicit" else expired_dovecot.imap
    endpoint = MailEndpoint("imap", IMAP, port, tls, CLEARTEXT)  # type: ignore[arg-type]
    result = run_check(endpoint, expired_dovecot.address, ca.root)
    message = only_finding(result, "PROBE-SERVER-CERT")
    assert "certificate has expired" in message
    assert "Renew" in result.findings[0].fix
    assert result.tls_version is None
    assert result.mechanisms == ()


def test_certificate_for_another_name(elsewhere_dovecot: Dovecot, ca: TestCA) -> None:
    endpoint = MailEndpoint("pop3", POP, elsewhere_dovecot.pop3s, "implicit", CLEARTEXT)
    result = run_check(endpoint, elsewhere_dovecot.address, ca.root)
    message = only_finding(result, "PROBE-SERVER-CERT")
    assert "Hostname mismatch" in message
    assert POP in message
    assert POP in result.findings[0].fix


def test_certificate_checked_against_the_advertised_name_not_the_address(
    dovecot: Dovecot, ca: TestCA
) -> None:
    """The connection goes to 127.0.0.2, which the certificate does not name: still valid."""
    endpoint = MailEndpoint("imap", IMAP, dovecot.imaps, "implicit", CLEARTEXT)
    result = run_check(endpoint, dovecot.address, ca.root)
    assert result.ok
    assert result.steps[0].detail == f"connected to {dovecot.address}:{dovecot.imaps}"


def test_untrusted_certificate(dovecot: Dovecot) -> None:
    """Without --ca-file only the system's authorities count, and the test CA is not one."""
    endpoint = MailEndpoint("imap", IMAP, dovecot.imap, "starttls", CLEARTEXT)
    result = run_check(endpoint, dovecot.address, None)
    message = only_finding(result, "PROBE-SERVER-CERT")
    assert "unable to get local issuer certificate" in message
    assert "--ca-file" in result.findings[0].fix


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "offers"),
    [("imap", ["AUTH=PLAIN", "AUTH=LOGIN", "LOGIN without LOGINDISABLED"]), ("pop3", ["USER"])],
)
def test_plaintext_auth_before_starttls(
    kind: str, offers: list[str], plaintext_dovecot: Dovecot, ca: TestCA
) -> None:
    port = plaintext_dovecot.imap if kind == "imap" else plaintext_dovecot.pop3
    host = IMAP if kind == "imap" else POP
    endpoint = MailEndpoint(kind, host, port, "starttls", CLEARTEXT)  # type: ignore[arg-type]
    result = run_check(endpoint, plaintext_dovecot.address, ca.root)
    message = only_finding(result, "PROBE-SERVER-PLAINTEXT-AUTH")
    assert result.findings[0].severity is Severity.WARNING
    assert "before STARTTLS" in message
    for offer in offers:
        assert offer in message
    assert "disable_plaintext_auth" in result.findings[0].fix
    # The rest of the check still ran: TLS and the mechanisms after it.
    assert result.mechanisms == ("PLAIN", "LOGIN")
    assert result.tls_version is not None


def test_implicit_tls_port_is_not_judged_on_plaintext(
    plaintext_dovecot: Dovecot, ca: TestCA
) -> None:
    endpoint = MailEndpoint("imap", IMAP, plaintext_dovecot.imaps, "implicit", CLEARTEXT)
    assert run_check(endpoint, plaintext_dovecot.address, ca.root).ok


@pytest.mark.parametrize("kind", ["imap", "smtp"])
def test_advertised_encrypted_password_not_offered(
    kind: str, dovecot: Dovecot, submission: SubmissionServer, ca: TestCA
) -> None:
    port = dovecot.imaps if kind == "imap" else submission.starttls
    host = IMAP if kind == "imap" else SMTP
    address = dovecot.address if kind == "imap" else "127.0.0.1"
    tls = "implicit" if kind == "imap" else "starttls"
    endpoint = MailEndpoint(kind, host, port, tls, ("password-encrypted",))  # type: ignore[arg-type]
    result = run_check(endpoint, address, ca.root)
    message = only_finding(result, "PROBE-SERVER-AUTH-MISSING")
    assert result.findings[0].severity is Severity.ERROR
    assert "password-encrypted" in message
    assert "CRAM-MD5" in message
    assert "SASL PLAIN LOGIN" in message
    assert result.mechanisms == ("PLAIN", "LOGIN")


def test_methods_with_nothing_to_check(dovecot: Dovecot, ca: TestCA) -> None:
    endpoint = MailEndpoint(
        "pop3", POP, dovecot.pop3, "starttls", ("client-IP-address", "none", "plain")
    )
    assert run_check(endpoint, dovecot.address, ca.root).ok


# --- hostile and broken servers ------------------------------------------------------------

Script = Callable[[socket.socket, threading.Event], None]


class ScriptedServer:
    """A TCP server on 127.0.0.1 that runs ``script`` for every connection, in a thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.threads: list[threading.Thread] = []
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
            conn.settimeout(0.05)
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client went away: what scripts expect
            self.script(conn, self.stop)


def send_until_stopped(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    while not stop.is_set():
        try:
            conn.sendall(data)
        except TimeoutError:
            continue


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accepts, then never says anything (nor reads)."""
    stop.wait()


def endless_line(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"* OK ")
    send_until_stopped(conn, stop, b"A" * 4096)


def receive_line(conn: socket.socket, stop: threading.Event) -> bytes:
    data = b""
    while b"\n" not in data and not stop.is_set():
        try:
            chunk = conn.recv(1024)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def endless_capabilities(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"* OK ready\r\n")
    receive_line(conn, stop)
    send_until_stopped(conn, stop, b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n" * 64)


def refuses_starttls(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"* OK ready\r\n")
    while not stop.is_set():
        line = receive_line(conn, stop)
        tag, _, command = line.strip().partition(b" ")
        if command == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n" + tag + b" OK\r\n")
        elif command == b"STARTTLS":
            conn.sendall(tag + b" NO [UNAVAILABLE] TLS is not configured\r\n")
        elif command == b"LOGOUT":
            conn.sendall(b"* BYE bye\r\n" + tag + b" OK\r\n")
            return


def tls_alert_first(conn: socket.socket, stop: threading.Event) -> None:
    """What some TLS terminators do on connect: a fatal handshake_failure alert."""
    conn.sendall(b"\x15\x03\x03\x00\x02\x02\x28")
    stop.wait()


def smtp_refuses_service(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"554-smtp.example.test no service for you\r\n554 5.3.2 go away\r\n")
    stop.wait()


def test_tls_records_where_a_greeting_was_expected() -> None:
    with ScriptedServer(tls_alert_first) as server:
        endpoint = MailEndpoint("smtp", SMTP, server.port, "starttls", CLEARTEXT)
        result = run_check(endpoint, "127.0.0.1", None)
    message = only_finding(result, "PROBE-SERVER-TLS-MODE")
    assert "sent TLS records where a greeting was expected" in message
    assert "speaks implicit TLS" in message


def test_smtp_greeting_that_refuses_service() -> None:
    with ScriptedServer(smtp_refuses_service) as server:
        endpoint = MailEndpoint("smtp", SMTP, server.port, "starttls", CLEARTEXT)
        result = run_check(endpoint, "127.0.0.1", None)
    message = only_finding(result, "PROBE-SERVER-PROTOCOL")
    assert "refuses the connection: 554 smtp.example.test no service for you" in message


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_server_that_never_answers(tls: str) -> None:
    with ScriptedServer(silent) as server:
        endpoint = MailEndpoint("imap", IMAP, server.port, tls, CLEARTEXT)  # type: ignore[arg-type]
        started = time.monotonic()
        result = run_check(endpoint, "127.0.0.1", None, timeout=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.6
    message = only_finding(result, "PROBE-SERVER-TIMEOUT")
    assert "no answer" in message or "no greeting" in message
    assert result.steps[-1].outcome is Outcome.FAILED


def test_server_that_sends_an_endless_line() -> None:
    with ScriptedServer(endless_line) as server:
        endpoint = MailEndpoint("imap", IMAP, server.port, "starttls", CLEARTEXT)
        started = time.monotonic()
        result = run_check(endpoint, "127.0.0.1", None, timeout=3.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0  # refused at 8 KiB, not when the time is up
    message = only_finding(result, "PROBE-SERVER-PROTOCOL")
    assert f"a line longer than {MAX_LINE} bytes" in message
    assert "IMAP greeting" in message


def test_server_that_sends_endless_capability_lines() -> None:
    with ScriptedServer(endless_capabilities) as server:
        endpoint = MailEndpoint("imap", IMAP, server.port, "starttls", CLEARTEXT)
        started = time.monotonic()
        result = run_check(endpoint, "127.0.0.1", None, timeout=3.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    message = only_finding(result, "PROBE-SERVER-PROTOCOL")
    assert "more than 200 lines" in message


def test_server_that_refuses_starttls() -> None:
    with ScriptedServer(refuses_starttls) as server:
        endpoint = MailEndpoint("imap", IMAP, server.port, "starttls", CLEARTEXT)
        result = run_check(endpoint, "127.0.0.1", None)
    message = only_finding(result, "PROBE-SERVER-NO-STARTTLS")
    assert "TLS is not configured" in message
    assert result.steps[-1].action == "IMAP LOGOUT"
    assert result.steps[-1].outcome is Outcome.OK


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # bound, not listening: the connection is refused
        result = run_check(MailEndpoint("smtp", SMTP, port, "starttls"), "127.0.0.1", None)
    message = only_finding(result, "PROBE-SERVER-UNREACHABLE")
    assert f"cannot connect: 127.0.0.1:{port}" in message
    assert result.steps[0].action == "SMTP connect"
    assert result.steps[0].outcome is Outcome.FAILED


def test_silent_servers_are_checked_in_parallel() -> None:
    with ScriptedServer(silent) as one, ScriptedServer(silent) as two:
        endpoints = [
            MailEndpoint("pop3", POP, one.port, "implicit"),
            MailEndpoint("smtp", SMTP, two.port, "starttls"),
        ]
        started = time.monotonic()
        results = run_checks(endpoints, "127.0.0.1", None, timeout=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.6
    assert [codes(r) for r in results] == [["PROBE-SERVER-TIMEOUT"]] * 2


def test_every_code_is_explained() -> None:
    assert all(code.startswith("PROBE-SERVER-") for code in CODES)
    assert all(len(text) > 80 and "\n" not in text for text in CODES.values())


# --- capability parsers on arbitrary bytes -------------------------------------------------


def parse_or_refuse(parse: Callable[[T], Capabilities], data: T) -> Capabilities | None:
    """The parser's result, or None when it refused the input with a one-line ProtocolError."""
    message = ""
    try:
        return parse(data)
    except ProtocolError as exc:
        message = str(exc)
    assert message
    assert "\n" not in message
    return None


def assert_bounded(caps: Capabilities, size: int) -> None:
    assert len(caps.words) <= MAX_WORDS
    assert len(caps.mechanisms) <= MAX_WORDS
    assert sum(map(len, caps.words)) <= size
    assert all(w and w == w.upper() and w.isascii() and " " not in w for w in caps.words)


lines = st.lists(st.binary(max_size=120), max_size=220)
line_text_words = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    max_size=30,
)


@given(st.binary(max_size=MAX_LINE + 100))
@example(b"* CAPABILITY " + b"A " * 5000)
@example(b"* capability IMAP4rev1 auth=plain AUTH= \xff\xfe STARTTLS\r\n")
def test_imap_parser_on_arbitrary_bytes(data: bytes) -> None:
    caps = parse_or_refuse(imap_capabilities, data)
    if caps is not None:
        assert_bounded(caps, len(data))


@given(line_text_words)
def test_imap_parser_reads_what_it_is_given(words: list[str]) -> None:
    caps = imap_capabilities(("* CAPABILITY " + " ".join(words) + "\r\n").encode())
    assert caps.words == tuple(dict.fromkeys(w.upper() for w in words))
    assert caps.starttls == ("STARTTLS" in caps.words)
    assert caps.password_command == ("LOGINDISABLED" not in caps.words)


@given(lines)
@example([b"STLS", b"USER", b"SASL PLAIN LOGIN", b"..dot", b"\xff"])
def test_pop3_parser_on_arbitrary_bytes(data: list[bytes]) -> None:
    caps = parse_or_refuse(pop3_capabilities, data)
    if caps is not None:
        assert_bounded(caps, sum(map(len, data)))


@given(lines)
@example([b"250-smtp.example.test", b"250-AUTH=PLAIN LOGIN", b"250 STARTTLS"])
@example([b"250-x", b"251 y"])
@example([b"250"])
def test_smtp_parser_on_arbitrary_bytes(data: list[bytes]) -> None:
    caps = parse_or_refuse(smtp_capabilities, data)
    if caps is not None:
        assert_bounded(caps, sum(map(len, data)))


@given(line_text_words)
def test_smtp_parser_reads_what_it_is_given(words: list[str]) -> None:
    reply = [b"250-smtp.example.test greets you", *(f"250-{w}".encode() for w in words)]
    reply.append(b"250 AUTH PLAIN LOGIN")
    caps = smtp_capabilities(reply)
    assert {"PLAIN", "LOGIN"} <= set(caps.mechanisms)
    assert "AUTH" in caps.words
    assert smtp_reply(reply)[0] == 250
