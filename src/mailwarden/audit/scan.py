"""The audit's only network code that speaks TLS: connect to each endpoint and record what it saw.

:func:`scan` makes one TLS session with one endpoint — implicit TLS, or the STARTTLS dialogue of
IMAP, POP3 or SMTP — and returns an :class:`~mailwarden.audit.model.Observation`: the chain as
the server sent it, the stapled OCSP response, the protocol version and cipher, the
capabilities before TLS and the SASL mechanisms after it, and which legacy TLS versions the
server still accepts. :func:`scan_all` runs many scans in a thread pool, politely.

Nothing is verified here. The checks judge the chain, the names and the dates, so the handshake
must succeed with certificates a verifying client would refuse (expired, self-signed, for
another name, RSA-1024, SHA-1): verification is off and OpenSSL's security level is 0.

pyOpenSSL rather than the standard library, because only it can request and read an OCSP
staple. Its connections run over non-blocking sockets, and every wait (connect, read, write,
handshake) is bounded by one deadline for the whole scan, so a server that accepts and never
speaks costs at most ``timeout`` seconds. What a server sends is bounded too (lines of 8 KiB,
200 lines a reply, OpenSSL's own limit on the certificate message), and every failure becomes
an observation with an ``error_kind`` and a one-line message, never an exception. No credential
is ever sent; mail sessions end with LOGOUT or QUIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import math
import select
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from mailwarden.audit.model import Endpoint, ErrorKind, Observation
from mailwarden.discovery.mailcaps import (
    MAX_LINE,
    MAX_LINES,
    Capabilities,
    Kind,
    ProtocolError,
    cleartext_offers,
    imap_capabilities,
    line_text,
    pop3_capabilities,
    shorten,
    smtp_capabilities,
    smtp_is_last_line,
    smtp_reply,
)

DEFAULT_TIMEOUT = 10.0
CIPHERS = b"ALL:@SECLEVEL=0"
"""Every cipher OpenSSL has but the null ones, at security level 0: a server with an RSA-1024
key, a SHA-1 chain or only TLS 1.0 still completes the handshake, so the checks can judge it."""
GOODBYE_SECONDS = 1.0
"""Longest wait for the reply to LOGOUT/QUIT: a server that does not answer it is left alone."""
HANDOVER_SECONDS = 0.2
"""How long :func:`scan_all` waits past its deadline for scans that were running then: their
own time limit ends at the deadline, this is only for them to hand their result over."""

_READ_SIZE = 4096
_NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})
_NO_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})
_NOT_TLS = ("wrong version number", "packet length too long", "http request", "unknown protocol")
"""OpenSSL's reasons when the answer to a ClientHello was not TLS at all."""


def _seconds(value: float) -> str:
    """A duration for messages: ``10``, ``2.5``, and ``1`` for a budget clipped to 0.999."""
    if value < 0.1:
        return f"{value:.2g}"
    return f"{value:.1f}".removesuffix(".0")


class _Failure(Exception):
    """Why the scan stopped, as the observation will say it."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


# --- TLS contexts --------------------------------------------------------------------------


@dataclass(slots=True)
class _Staple:
    der: bytes | None = None


def _keep_staple(connection: SSL.Connection, der: bytes, data: object) -> bool:
    """OCSP client callback: keep whatever was stapled (the revocation check judges it)."""
    holder = connection.get_app_data()
    if isinstance(holder, _Staple):
        holder.der = der or None
    return True


@functools.cache
def _context(only: int | None) -> SSL.Context:
    """A non-verifying client context: any version from TLS 1.0, or ``only`` that version.

    Contexts are shared by the worker threads; nothing changes them after they are made.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_cipher_list(CIPHERS)
    context.set_min_proto_version(only or SSL.TLS1_VERSION)
    if only is not None:
        context.set_max_proto_version(only)
    # Servers that predate RFC 5746 still get audited; the session carries no secrets.
    context.set_options(SSL.OP_LEGACY_SERVER_CONNECT | SSL.OP_IGNORE_UNEXPECTED_EOF)
    context.set_verify(SSL.VERIFY_NONE)
    context.set_ocsp_client_callback(_keep_staple)
    return context


def _tls_reason(exc: SSL.Error) -> str:
    """OpenSSL's reasons, in words, without its library and function names."""
    if isinstance(exc, SSL.ZeroReturnError):
        return "the server closed the connection"
    if isinstance(exc, SSL.SysCallError):
        code = exc.args[0] if exc.args else None
        if code in (-1, 0) or not exc.args:
            return "the server closed the connection"
        return f"connection error: {shorten(str(exc.args[-1]))}"
    reasons: list[str] = []
    stack = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    for entry in stack:
        if isinstance(entry, tuple) and entry and entry[-1]:
            reasons.append(str(entry[-1]))
    return shorten("; ".join(dict.fromkeys(reasons)) or str(exc) or type(exc).__name__)


# --- the wire ------------------------------------------------------------------------------


class _Wire:
    """One TCP connection, plain then perhaps TLS, with bounded line reads and one deadline."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout
        self.tls: SSL.Connection | None = None
        self.buffer = bytearray()

    def _wait(self, *, write: bool, awaiting: str) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            poller = select.poll()
            poller.register(self.sock, select.POLLOUT if write else select.POLLIN)
            if poller.poll(math.ceil(remaining * 1000)):
                return
        raise _Failure(
            "timeout", f"timed out after {_seconds(self.timeout)} s waiting for {awaiting}"
        )

    def _recv(self, awaiting: str) -> bytes:
        """Some bytes, or b"" when the server closed the connection."""
        while True:
            try:
                if self.tls is not None:
                    return self.tls.recv(_READ_SIZE)
                return self.sock.recv(_READ_SIZE)
            except (BlockingIOError, SSL.WantReadError):
                self._wait(write=False, awaiting=awaiting)
            except SSL.WantWriteError:
                self._wait(write=True, awaiting=awaiting)
            except SSL.ZeroReturnError:
                return b""
            except SSL.SysCallError as exc:
                if not exc.args or exc.args[0] in (-1, 0):
                    return b""
                raise _Failure("protocol", f"{_tls_reason(exc)} ({awaiting})") from None
            except SSL.Error as exc:
                raise _Failure("protocol", f"TLS error: {_tls_reason(exc)} ({awaiting})") from None
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise _Failure("protocol", f"{reason} while waiting for {awaiting}") from None

    def _fill(self, awaiting: str) -> None:
        chunk = self._recv(awaiting)
        if not chunk:
            partly = " in the middle of a line" if self.buffer else ""
            raise _Failure(
                "protocol",
                f"the server closed the connection{partly} while we waited for {awaiting}",
            )
        self.buffer += chunk

    def peek(self, awaiting: str) -> bytes:
        """The first bytes the server sent, without consuming them."""
        if not self.buffer:
            self._fill(awaiting)
        return bytes(self.buffer[:16])

    def line(self, awaiting: str) -> bytes:
        """One line, CRLF included; refuses lines longer than :data:`MAX_LINE`."""
        while True:
            end = self.buffer.find(b"\n", 0, MAX_LINE)
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) >= MAX_LINE:
                raise _Failure("protocol", f"a line longer than {MAX_LINE} bytes in {awaiting}")
            self._fill(awaiting)

    def send(self, command: str) -> None:
        data = command.encode("ascii") + b"\r\n"
        awaiting = f"the server to take {command.split(' ', 1)[0]}"
        while data:
            try:
                sent = self.tls.send(data) if self.tls is not None else self.sock.send(data)
            except (BlockingIOError, SSL.WantWriteError):
                self._wait(write=True, awaiting=awaiting)
                continue
            except SSL.WantReadError:
                self._wait(write=False, awaiting=awaiting)
                continue
            except (SSL.Error, OSError) as exc:
                if isinstance(exc, SSL.Error):
                    reason = _tls_reason(exc)
                else:
                    reason = exc.strerror or type(exc).__name__
                raise _Failure("protocol", f"cannot send {command}: {reason}") from None
            data = data[sent:]

    def start_tls(self, context: SSL.Context, server_name: str | None) -> _Staple:
        """The TLS handshake; what the server stapled, if anything."""
        # Bytes that came before the handshake must never be read as if they came through TLS
        # (the STARTTLS command injection of CVE-2011-0411, seen from the client side).
        self.buffer.clear()
        staple = _Staple()
        tls = SSL.Connection(context, self.sock)
        tls.set_app_data(staple)
        if server_name is not None:
            tls.set_tlsext_host_name(server_name.encode("ascii"))
        tls.request_ocsp()
        tls.set_connect_state()
        while True:
            try:
                tls.do_handshake()
                break
            except SSL.WantReadError:
                self._wait(write=False, awaiting="the TLS handshake")
            except SSL.WantWriteError:
                self._wait(write=True, awaiting="the TLS handshake")
            except SSL.Error as exc:
                reason = _tls_reason(exc)
                if any(marker in reason.lower() for marker in _NOT_TLS):
                    raise _Failure(
                        "protocol",
                        f"the port does not speak TLS: the answer to the TLS handshake was not "
                        f"TLS ({reason}); a plain-text port, or one that expects STARTTLS?",
                    ) from None
                raise _Failure("handshake", f"TLS handshake failed: {reason}") from None
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise _Failure("handshake", f"TLS handshake failed: {reason}") from None
        self.tls = tls
        return staple

    def close(self) -> None:
        if self.tls is not None:
            with contextlib.suppress(SSL.Error, OSError):
                self.tls.shutdown()  # one close_notify, not waiting for the server's
        self.sock.close()


def _looks_like_tls(data: bytes) -> bool:
    """A TLS record header: handshake (22) or alert (21), protocol major version 3."""
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


# --- the three mail protocols --------------------------------------------------------------


class _Imap:
    kind: Kind = "imap"

    def __init__(self) -> None:
        self.tag = 0

    def greet(self, wire: _Wire) -> None:
        text = line_text(wire.line("the IMAP greeting"))
        upper = text.upper()
        if upper.startswith(("* OK", "* PREAUTH")):
            return
        if upper.startswith("* BYE"):
            raise _Failure("refused-service", f"the server refuses service: {shorten(text)!r}")
        raise _Failure("protocol", f"expected an IMAP greeting ('* OK …'), got {shorten(text)!r}")

    def command(self, wire: _Wire, command: str) -> tuple[list[bytes], str]:
        """Send a tagged command; the untagged lines before its completion, and the status."""
        self.tag += 1
        tag = f"a{self.tag}"
        wire.send(f"{tag} {command}")
        prefix = tag.encode() + b" "
        untagged: list[bytes] = []
        for _ in range(MAX_LINES):
            line = wire.line(f"the reply to {command}")
            if line.startswith(prefix):
                return untagged, line_text(line)[len(prefix) :]
            untagged.append(line)
        raise _Failure("protocol", f"more than {MAX_LINES} lines in the reply to {command}")

    def capabilities(self, wire: _Wire) -> Capabilities | None:
        untagged, status = self.command(wire, "CAPABILITY")
        if status[:2].upper() != "OK":
            raise _Failure("protocol", f"CAPABILITY refused: {shorten(status)!r}")
        lines = [line for line in untagged if line[:13].upper() == b"* CAPABILITY "]
        if not lines:
            raise _Failure("protocol", "no '* CAPABILITY' line in the reply to CAPABILITY")
        return imap_capabilities(lines[-1])

    def starttls(self, wire: _Wire) -> None:
        _, status = self.command(wire, "STARTTLS")
        if status[:2].upper() != "OK":
            raise _Failure("starttls", f"STARTTLS refused: {shorten(status)!r}")

    def goodbye(self, wire: _Wire) -> None:
        self.command(wire, "LOGOUT")


class _Pop3:
    kind: Kind = "pop3"

    def greet(self, wire: _Wire) -> None:
        text = line_text(wire.line("the POP3 greeting"))
        if text[:3].upper() == "+OK":
            return
        if text[:4].upper() == "-ERR":
            raise _Failure("refused-service", f"the server refuses service: {shorten(text)!r}")
        raise _Failure("protocol", f"expected a POP3 greeting ('+OK …'), got {shorten(text)!r}")

    def status(self, wire: _Wire, command: str) -> str:
        wire.send(command)
        return line_text(wire.line(f"the reply to {command}"))

    def capabilities(self, wire: _Wire) -> Capabilities | None:
        """None when the server does not know CAPA (RFC 2449 is optional)."""
        if self.status(wire, "CAPA")[:3].upper() != "+OK":
            return None
        lines: list[bytes] = []
        while True:
            line = wire.line("the reply to CAPA")
            if line.rstrip(b"\r\n") == b".":
                return pop3_capabilities(lines)
            lines.append(line)
            if len(lines) > MAX_LINES:
                raise _Failure("protocol", f"more than {MAX_LINES} lines in the reply to CAPA")

    def starttls(self, wire: _Wire) -> None:
        status = self.status(wire, "STLS")
        if status[:3].upper() != "+OK":
            raise _Failure("starttls", f"STLS refused: {shorten(status)!r}")

    def goodbye(self, wire: _Wire) -> None:
        self.status(wire, "QUIT")


class _Smtp:
    kind: Kind = "smtp"

    def __init__(self, ehlo_name: str) -> None:
        self.ehlo_name = ehlo_name

    def reply(self, wire: _Wire, awaiting: str) -> tuple[int, tuple[str, ...], list[bytes]]:
        lines: list[bytes] = []
        for _ in range(MAX_LINES):
            line = wire.line(awaiting)
            lines.append(line)
            if smtp_is_last_line(line):
                code, texts = smtp_reply(lines)
                return code, texts, lines
        raise _Failure("protocol", f"more than {MAX_LINES} lines in {awaiting}")

    def greet(self, wire: _Wire) -> None:
        code, texts, _ = self.reply(wire, "the SMTP greeting")
        if code != 220:
            # 421 "busy, try later", 554 "no service for you": either way, not a TLS verdict.
            raise _Failure(
                "refused-service", f"the server refuses service: {code} {shorten(texts[0])}"
            )

    def capabilities(self, wire: _Wire) -> Capabilities | None:
        wire.send(f"EHLO {self.ehlo_name}")
        code, texts, lines = self.reply(wire, "the reply to EHLO")
        if 400 <= code < 500:
            raise _Failure("refused-service", f"EHLO deferred: {code} {shorten(texts[0])}")
        if code != 250:
            raise _Failure(
                "starttls", f"EHLO refused ({code} {shorten(texts[0])}): no ESMTP, no STARTTLS"
            )
        return smtp_capabilities(lines)

    def starttls(self, wire: _Wire) -> None:
        wire.send("STARTTLS")
        code, texts, _ = self.reply(wire, "the reply to STARTTLS")
        if code == 421:
            raise _Failure("refused-service", f"STARTTLS deferred: {code} {shorten(texts[0])}")
        if code != 220:
            raise _Failure("starttls", f"STARTTLS refused: {code} {shorten(' '.join(texts))}")

    def goodbye(self, wire: _Wire) -> None:
        wire.send("QUIT")
        self.reply(wire, "the reply to QUIT")


_Dialect = _Imap | _Pop3 | _Smtp

_STARTTLS_WORD = {"imap": "STARTTLS", "pop3": "STLS", "smtp": "STARTTLS"}


# --- one session ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    """What one session learnt so far, kept when a later step fails."""

    tls_version: str | None = None
    cipher: str | None = None
    chain: tuple[bytes, ...] = ()
    staple: bytes | None = None
    before: Capabilities | None = None
    mechanisms: tuple[str, ...] = ()
    after: tuple[str, ...] | None = None
    plaintext: tuple[str, ...] = ()
    failure: _Failure | None = None


def _connect(endpoint: Endpoint, deadline: float, timeout: float) -> socket.socket:
    try:
        address = ipaddress.ip_address(endpoint.address)
    except ValueError:
        raise _Failure("connect", f"not an IP address: {shorten(endpoint.address)!r}") from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    target = (
        f"[{address}]:{endpoint.port}" if address.version == 6 else f"{address}:{endpoint.port}"
    )
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in _NO_FAMILY:
            raise _Failure("no-route", f"this host has no IPv{address.version}") from None
        raise _Failure("connect", f"cannot open a socket: {exc.strerror}") from None
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.connect((str(address), endpoint.port))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError:
        sock.close()
        raise _Failure(
            "timeout", f"no answer to the connection to {target} within {_seconds(timeout)} s"
        ) from None
    except OSError as exc:
        sock.close()
        reason = exc.strerror or type(exc).__name__
        if exc.errno in _NO_ROUTE or exc.errno in _NO_FAMILY:
            raise _Failure(
                "no-route",
                f"cannot reach {target} from this host ({reason}): no IPv{address.version} route",
            ) from None
        raise _Failure("connect", f"cannot connect to {target}: {reason}") from None
    return sock


def _server_name(host: str) -> str | None:
    """The SNI to send: the host name, never an address literal (RFC 6066 §3)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".") or None
    return None


def _dialect(endpoint: Endpoint, ehlo_name: str) -> _Dialect | None:
    if endpoint.protocol == "imap":
        return _Imap()
    if endpoint.protocol == "pop3":
        return _Pop3()
    if endpoint.protocol == "smtp":
        return _Smtp(ehlo_name)
    return None


def _goodbye(wire: _Wire, dialect: _Dialect) -> None:
    """LOGOUT/QUIT, waiting briefly for the reply; a server that does not answer is let go."""
    wire.deadline = min(wire.deadline, time.monotonic() + GOODBYE_SECONDS)
    with contextlib.suppress(_Failure, ProtocolError):
        dialect.goodbye(wire)


def _session(
    endpoint: Endpoint,
    context: SSL.Context,
    deadline: float,
    timeout: float,
    ehlo_name: str,
    *,
    full: bool,
) -> _Seen:
    """Connect, reach TLS as the endpoint is configured, and (``full``) read the capabilities.

    Failures are recorded in ``failure``; what was learnt before them stays.
    """
    seen = _Seen()
    dialect = _dialect(endpoint, ehlo_name)
    starttls = dialect is not None and endpoint.tls == "starttls"
    wire: _Wire | None = None
    try:
        wire = _Wire(_connect(endpoint, deadline, timeout), deadline, timeout)
        if dialect is not None and starttls:
            if _looks_like_tls(wire.peek("the greeting")):
                raise _Failure(
                    "protocol",
                    f"TLS records where a greeting belongs: port {endpoint.port} speaks implicit "
                    "TLS, not STARTTLS",
                )
            dialect.greet(wire)
            caps = dialect.capabilities(wire)
            seen.before = caps
            seen.plaintext = cleartext_offers(dialect.kind, caps) if caps is not None else ()
            word = _STARTTLS_WORD[dialect.kind]
            if caps is not None and not caps.starttls:
                listed = shorten(" ".join(caps.words), 160) or "none"
                _goodbye(wire, dialect)
                raise _Failure("starttls", f"{word} not offered (capabilities: {listed})")
            try:
                dialect.starttls(wire)
            except _Failure as refused:
                if refused.kind == "starttls":
                    _goodbye(wire, dialect)
                raise
        staple = wire.start_tls(context, _server_name(endpoint.host))
        tls = wire.tls
        assert tls is not None
        seen.tls_version = tls.get_protocol_version_name()
        seen.cipher = tls.get_cipher_name()
        chain = tls.get_peer_cert_chain(as_cryptography=True) or []
        seen.chain = tuple(cert.public_bytes(Encoding.DER) for cert in chain)
        seen.staple = staple.der
        if dialect is None:
            return seen
        try:
            if not starttls:
                dialect.greet(wire)
            if full:
                after = dialect.capabilities(wire)
                seen.mechanisms = after.mechanisms if after is not None else ()
                seen.after = after.words if after is not None else None
            _goodbye(wire, dialect)
        except (_Failure, ProtocolError):
            # The TLS session was made and what it showed stands; without the capabilities
            # after TLS the mechanisms stay unknown (empty).
            pass
    except _Failure as exc:
        seen.failure = exc
    except ProtocolError as exc:
        seen.failure = _Failure("protocol", str(exc))
    except (OSError, ValueError, SSL.Error) as exc:  # nothing a server sends may escape
        seen.failure = _Failure("protocol", shorten(f"{type(exc).__name__}: {exc}"))
    finally:
        if wire is not None:
            wire.close()
    return seen


def _legacy_versions(
    endpoint: Endpoint, main: _Seen, deadline: float, timeout: float, ehlo_name: str
) -> tuple[str, ...]:
    """The versions below TLS 1.2 the server accepts.

    One handshake offering TLS 1.0 to 1.1 settles the usual case (a server refusing both); only
    when it negotiates TLS 1.1 does a second one, pinned to TLS 1.0, ask about the older one.
    """
    legacy_main: tuple[str, ...] = ()
    if main.tls_version in ("TLSv1", "TLSv1.1"):
        legacy_main = (main.tls_version,)
    if deadline - time.monotonic() <= 0:
        return legacy_main
    probe = _session(endpoint, _legacy_context(), deadline, timeout, ehlo_name, full=False)
    if probe.failure is not None or probe.tls_version not in ("TLSv1", "TLSv1.1"):
        return legacy_main
    accepted = [probe.tls_version]
    if probe.tls_version == "TLSv1.1" and deadline - time.monotonic() > 0:
        older = _session(
            endpoint, _context(SSL.TLS1_VERSION), deadline, timeout, ehlo_name, full=False
        )
        if older.failure is None and older.tls_version == "TLSv1":
            accepted.insert(0, "TLSv1")
    return tuple(dict.fromkeys((*legacy_main, *accepted)))


@functools.cache
def _legacy_context() -> SSL.Context:
    """TLS 1.0 to 1.1 only: the server picks the highest of them it still speaks."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_cipher_list(CIPHERS)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_max_proto_version(SSL.TLS1_1_VERSION)
    context.set_options(SSL.OP_LEGACY_SERVER_CONNECT | SSL.OP_IGNORE_UNEXPECTED_EOF)
    context.set_verify(SSL.VERIFY_NONE)
    return context


def _check_ehlo_name(ehlo_name: str) -> None:
    """The caller's mistake, not the server's: refused before any connection."""
    if not ehlo_name or not all("!" <= c <= "~" for c in ehlo_name):
        raise ValueError(f"not a name to send with EHLO: {ehlo_name!r}")


def scan(
    endpoint: Endpoint,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ehlo_name: str,
    legacy: bool = True,
) -> Observation:
    """Make one TLS session with ``endpoint`` and record what it showed; blocking.

    ``timeout`` bounds the whole scan, the extra handshakes that probe legacy versions
    (``legacy``) included. ``ehlo_name`` is this host's name for SMTP's EHLO. Never raises for
    anything a server does: every failure is an observation with ``error`` and ``error_kind``.
    """
    _check_ehlo_name(ehlo_name)
    started = time.monotonic()
    deadline = started + timeout
    seen = _session(endpoint, _context(None), deadline, timeout, ehlo_name, full=True)
    failure = seen.failure
    versions: tuple[str, ...] = ()
    if legacy and failure is None:
        versions = _legacy_versions(endpoint, seen, deadline, timeout, ehlo_name)
    before = seen.before
    return Observation(
        endpoint,
        error=failure.message if failure is not None else None,
        error_kind=failure.kind if failure is not None else None,
        tls_version=seen.tls_version,
        cipher=seen.cipher,
        chain=seen.chain,
        staple=seen.staple,
        capabilities_before_tls=before.words if before is not None else (),
        mechanisms_before_tls=before.mechanisms if before is not None else (),
        mechanisms=seen.mechanisms,
        plaintext_auth_before_tls=seen.plaintext,
        legacy_versions=versions,
        legacy_probed=legacy and failure is None,
        capabilities_after_tls=seen.after,
        ms=(time.monotonic() - started) * 1000,
    )


# --- many endpoints ------------------------------------------------------------------------


def _server_key(endpoint: Endpoint) -> str:
    """The address, written one way: politeness counts connections per address."""
    try:
        return str(ipaddress.ip_address(endpoint.address))
    except ValueError:
        return endpoint.address


def _overdue(endpoint: Endpoint, deadline: float, *, started: bool) -> Observation:
    what = "not finished" if started else "not scanned"
    return Observation(
        endpoint,
        error=f"{what}: the audit's overall deadline of {_seconds(deadline)} s passed first",
        error_kind="timeout",
        ms=0.0,
    )


async def scan_all(
    endpoints: Sequence[Endpoint],
    *,
    timeout: float,
    deadline: float,
    per_server: int = 2,
    workers: int = 32,
    ehlo_name: str,
    legacy: bool = True,
    progress: Callable[[Observation], None] | None = None,
) -> tuple[Observation, ...]:
    """:func:`scan` every endpoint in a pool of ``workers`` threads; results in their order.

    Politeness: at most ``per_server`` connections to one address at a time (one scan holds one
    connection at a time). ``timeout`` bounds each scan; ``deadline`` is the number of seconds,
    from now, the whole run may take: a scan that starts late is given only the time left, and
    an endpoint whose turn has not come by then gets a ``timeout`` observation saying so.
    ``progress`` is called, in the event loop, with each observation as it is made.
    """
    if per_server < 1 or workers < 1:
        raise ValueError("per_server and workers must be at least 1")
    _check_ehlo_name(ehlo_name)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    results: list[Observation | None] = [None] * len(endpoints)
    per_address: dict[str, asyncio.Semaphore] = {}
    overall = asyncio.Semaphore(workers)
    running: set[int] = set()
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(endpoints))), thread_name_prefix="audit-scan"
    )

    def record(index: int, observation: Observation) -> None:
        results[index] = observation
        if progress is not None:
            progress(observation)

    async def one(index: int, endpoint: Endpoint) -> None:
        key = _server_key(endpoint)
        server = per_address.setdefault(key, asyncio.Semaphore(per_server))
        async with server, overall:
            left = end - loop.time()
            if left <= 0:
                return
            budget = min(timeout, left)
            running.add(index)
            observation = await loop.run_in_executor(
                pool,
                functools.partial(
                    scan, endpoint, timeout=budget, ehlo_name=ehlo_name, legacy=legacy
                ),
            )
            running.discard(index)
        if budget < timeout and observation.error_kind == "timeout":
            observation = replace(
                observation,
                error=f"{observation.error} (cut short by the audit's overall deadline of "
                f"{_seconds(deadline)} s)",
            )
        record(index, observation)

    # STARTTLS endpoints first: a greeting, capabilities and often a process forked per
    # connection (Dovecot's login, Postfix's smtpd) make them the slow ones, and one of them
    # started last would be the run's tail. Results keep the endpoints' order all the same.
    order = sorted(range(len(endpoints)), key=lambda i: endpoints[i].tls != "starttls")
    tasks = [asyncio.create_task(one(i, endpoints[i])) for i in order]
    try:
        if tasks:
            done, pending = await asyncio.wait(
                tasks, timeout=max(end - loop.time(), 0.0) + HANDOVER_SECONDS
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()  # a failing progress callback is the caller's to see
    finally:
        for task in tasks:
            task.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
    for index, endpoint in enumerate(endpoints):
        if results[index] is None:
            record(index, _overdue(endpoint, deadline, started=index in running))
    return tuple(r for r in results if r is not None)
