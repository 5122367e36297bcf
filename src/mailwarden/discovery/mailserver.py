"""The probe's last stage: talk to each IMAP, POP3 and SMTP server a client was told about.

For every server in the settings a client ends with, connect as that client would and check
what it would meet: implicit TLS or STARTTLS exactly as advertised, a certificate valid for the
advertised host name, the advertised authentication offered once TLS is up, and no password
accepted in clear before STARTTLS. No credentials are ever sent; each session ends with
LOGOUT/QUIT.

A server can be broken or hostile, so everything it sends is bounded (line length, lines per
reply, one deadline for the whole check) and every failure becomes a :class:`Step` and one
:class:`Finding` with a stable ``PROBE-SERVER-*`` code (explained in :data:`CODES`), never an
exception.

When TLS fails, the check says *why* rather than quoting OpenSSL: a STARTTLS port that stays
silent is offered a TLS handshake (a server speaking implicit TLS waits for the client to speak
first), and an implicit-TLS port whose handshake fails is asked again without TLS, to see
whether it greets in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mailwarden.discovery.mailcaps import (
    MAX_LINE,
    MAX_LINES,
    Capabilities,
    Kind,
    ProtocolError,
    cleartext_offers,
    imap_capabilities,
    line_text,
    method_needs,
    method_offered,
    pop3_capabilities,
    shorten,
    smtp_capabilities,
    smtp_is_last_line,
    smtp_reply,
)
from mailwarden.discovery.net import Connected, Network, Unreachable, hostport
from mailwarden.discovery.steps import Clock, Outcome, Step, Timer
from mailwarden.findings import Finding, Severity

TlsMode = Literal["implicit", "starttls", "none"]

DEFAULT_TIMEOUT = 5.0
GREETING_SHARE = 0.5
"""Part of the timeout a STARTTLS port gets to greet before it is offered a TLS handshake."""
HANDSHAKE_SHARE = 0.6
"""Part of the timeout an implicit-TLS handshake gets before the port is asked in plain text."""

CODES: dict[str, str] = {
    "PROBE-SERVER-UNREACHABLE": (
        "No TCP connection could be made to the advertised host and port: the name has no "
        "address, the connection was refused, or nothing answered in time. Clients configured "
        "from the document cannot reach their mail. Check the host name and port in the "
        "document, the DNS records of the host, and any firewall in between."
    ),
    "PROBE-SERVER-TIMEOUT": (
        "The server accepted the connection but did not answer within the time limit (no "
        "greeting, or no reply to a command or to the TLS handshake). Clients give up the same "
        "way. Common causes: an overloaded or hung server, a proxy or load balancer with no "
        "healthy back end, or a deliberate greeting delay longer than clients wait."
    ),
    "PROBE-SERVER-TLS-MODE": (
        "The port does not speak the TLS mode the document advertises: it was advertised for "
        "STARTTLS but speaks implicit TLS (no greeting until a TLS handshake), or advertised "
        "for implicit TLS (SSL) but greets in plain text and expects STARTTLS. Clients fail "
        "with an unhelpful error. Advertise socketType SSL (Outlook: Encryption SSL) for "
        "implicit-TLS ports such as 993, 995 and 465, and STARTTLS (Outlook: Encryption TLS) "
        "for 143, 110 and 587."
    ),
    "PROBE-SERVER-CERT": (
        "The TLS certificate the server presents failed verification for the advertised host "
        "name: it has expired, it does not name that host, or it does not chain to a trusted "
        "authority (often because the intermediate certificates are not sent). The message "
        "quotes the verification error. Clients warn or refuse to connect."
    ),
    "PROBE-SERVER-TLS-FAILED": (
        "The TLS handshake failed for a reason other than the certificate: no protocol version "
        "or cipher in common (the probe requires TLS 1.2 or later, as current clients do), or "
        "the server broke the handshake off."
    ),
    "PROBE-SERVER-NO-STARTTLS": (
        "The document advertises STARTTLS, but the server does not list it among its "
        "capabilities or refuses the command. A client would stop there (or, worse, carry on "
        "without encryption). Enable STARTTLS with a valid certificate on this port."
    ),
    "PROBE-SERVER-PLAINTEXT-AUTH": (
        "Before STARTTLS, the server already offers a way to send a password in clear: IMAP "
        "AUTH=PLAIN, AUTH=LOGIN or the LOGIN command without LOGINDISABLED; POP3 USER or SASL "
        "PLAIN/LOGIN; SMTP any AUTH. A client that skips STARTTLS, or an attacker who strips "
        "it, gets passwords on the wire. Dovecot: disable_plaintext_auth = yes; Postfix: "
        "smtpd_tls_auth_only = yes."
    ),
    "PROBE-SERVER-AUTH-MISSING": (
        "An authentication method the document advertises is not offered by the server once TLS "
        "is up (password-cleartext needs PLAIN or LOGIN, password-encrypted CRAM-MD5, "
        "DIGEST-MD5 or SCRAM, OAuth2 XOAUTH2 or OAUTHBEARER, TLS-client-cert EXTERNAL). A "
        "client configured with it cannot log in. An error when no advertised method is "
        "offered, a warning when at least one other is."
    ),
    "PROBE-SERVER-NO-TLS": (
        "The document advertises this server without any TLS, so passwords and mail cross the "
        "network in clear. Advertise the implicit-TLS or STARTTLS port instead."
    ),
    "PROBE-SERVER-PROTOCOL": (
        "The server broke its protocol: a greeting or reply that is not IMAP, POP3 or SMTP, a "
        "line longer than 8 KiB, more than 200 lines in a capability reply, a refused "
        "greeting, or a connection closed in the middle. The message quotes what was received."
    ),
}


@dataclass(frozen=True, slots=True)
class MailEndpoint:
    """One server a client was told about, as the settings document put it."""

    kind: Kind
    host: str
    port: int
    tls: TlsMode
    auth: tuple[str, ...] = ()
    """Autoconfig ``<authentication>`` values (``password-cleartext``, ``OAuth2``…), in order."""

    @property
    def target(self) -> str:
        return hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class EndpointResult:
    endpoint: MailEndpoint
    steps: tuple[Step, ...]
    findings: tuple[Finding, ...]
    tls_version: str | None
    """``TLSv1.3``…, once TLS was established with a valid certificate."""
    mechanisms: tuple[str, ...]
    """SASL mechanisms offered after TLS (or, for a server advertised without TLS, at all)."""

    @property
    def ok(self) -> bool:
        return all(f.severity is Severity.INFO for f in self.findings)


# --- the wire ------------------------------------------------------------------------------


class _Wire:
    """One connection: bounded line reads over asyncio streams; TLS is added in place."""

    def __init__(self, connected: Connected) -> None:
        self.reader = connected.reader
        self.writer = connected.writer
        self.buffer = bytearray()

    async def first_bytes(self) -> bytes:
        """Wait until the server has sent something, and show it without consuming it."""
        if not self.buffer:
            await self._read("the server closed the connection without a word")
        return bytes(self.buffer[:16])

    async def _read(self, closed: str) -> None:
        chunk = await self.reader.read(4096)
        if not chunk:
            raise ProtocolError(closed)
        self.buffer += chunk

    async def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\n", 0, MAX_LINE)
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) >= MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
            await self._read(
                "the server closed the connection"
                + (" in the middle of a line" if self.buffer else "")
            )

    async def send(self, command: str) -> None:
        self.writer.write(command.encode("ascii") + b"\r\n")
        await self.writer.drain()

    async def start_tls(self, context: ssl.SSLContext, server_name: str) -> None:
        # Bytes the server sent before the handshake must not be read as if they came through
        # TLS (the STARTTLS "command injection" of CVE-2011-0411, seen from the client side).
        self.buffer.clear()
        await self.writer.start_tls(context, server_hostname=server_name)

    def ssl_object(self) -> ssl.SSLObject | None:
        found = self.writer.get_extra_info("ssl_object")
        return found if isinstance(found, ssl.SSLObject) else None

    def address_literal(self) -> str:
        """Our own address as an SMTP address literal, what Thunderbird sends with EHLO."""
        sockname = self.writer.get_extra_info("sockname")
        address = str(sockname[0]) if isinstance(sockname, tuple) and sockname else "127.0.0.1"
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"

    async def close(self, grace: float) -> None:
        """Close, waiting at most ``grace`` seconds for the other side; then just drop it."""
        try:
            self.writer.close()
            async with asyncio.timeout(max(grace, 0.0)):
                await self.writer.wait_closed()
        except Exception:  # closing is best effort: whatever went wrong, the socket goes
            self.writer.transport.abort()


def _looks_like_tls(data: bytes) -> bool:
    """A TLS record header: handshake (22) or alert (21), protocol major version 3."""
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


def _is_plain_text(text: str) -> bool:
    return bool(text.strip()) and all(c.isprintable() for c in text) and "\ufffd" not in text


# --- the three protocols -------------------------------------------------------------------


class _Imap:
    name = "IMAP"
    starttls_command = "STARTTLS"
    capability_command = "CAPABILITY"
    logout_command = "LOGOUT"

    def __init__(self) -> None:
        self.tag = 0

    async def greet(self, wire: _Wire) -> str:
        text = line_text(await wire.line())
        if text[:4].upper() == "* OK":
            return text
        if text[:5].upper() == "* BYE":
            raise ProtocolError(f"the server refuses the connection: {shorten(text)!r}")
        raise ProtocolError(f"expected an IMAP greeting ('* OK …'), got {shorten(text)!r}")

    async def command(self, wire: _Wire, command: str) -> tuple[list[bytes], str]:
        """Send a tagged command; the untagged lines before its completion, and the status."""
        self.tag += 1
        tag = f"a{self.tag}"
        await wire.send(f"{tag} {command}")
        untagged: list[bytes] = []
        for _ in range(MAX_LINES):
            line = await wire.line()
            if line.startswith(tag.encode() + b" "):
                return untagged, line_text(line)[len(tag) + 1 :]
            untagged.append(line)
        raise ProtocolError(f"more than {MAX_LINES} lines in reply to {command}")

    async def capabilities(self, wire: _Wire) -> Capabilities:
        untagged, status = await self.command(wire, "CAPABILITY")
        if status[:2].upper() != "OK":
            raise ProtocolError(f"CAPABILITY refused: {shorten(status)!r}")
        lines = [line for line in untagged if line[:13].upper() == b"* CAPABILITY "]
        if not lines:
            raise ProtocolError("no '* CAPABILITY' line in the reply to CAPABILITY")
        return imap_capabilities(lines[-1])

    async def starttls(self, wire: _Wire) -> str | None:
        _, status = await self.command(wire, "STARTTLS")
        return None if status[:2].upper() == "OK" else status

    async def logout(self, wire: _Wire) -> str:
        _, status = await self.command(wire, "LOGOUT")
        return status


class _Pop3:
    name = "POP3"
    starttls_command = "STLS"
    capability_command = "CAPA"
    logout_command = "QUIT"

    async def greet(self, wire: _Wire) -> str:
        text = line_text(await wire.line())
        if text[:3].upper() == "+OK":
            return text
        if text[:4].upper() == "-ERR":
            raise ProtocolError(f"the server refuses the connection: {shorten(text)!r}")
        raise ProtocolError(f"expected a POP3 greeting ('+OK …'), got {shorten(text)!r}")

    async def status(self, wire: _Wire, command: str) -> str:
        await wire.send(command)
        return line_text(await wire.line())

    async def capabilities(self, wire: _Wire) -> Capabilities:
        status = await self.status(wire, "CAPA")
        if status[:3].upper() != "+OK":
            raise ProtocolError(f"CAPA (RFC 2449) refused: {shorten(status)!r}")
        lines: list[bytes] = []
        while True:
            line = await wire.line()
            if line.rstrip(b"\r\n") == b".":
                return pop3_capabilities(lines)
            lines.append(line)
            if len(lines) > MAX_LINES:
                raise ProtocolError(f"more than {MAX_LINES} lines in reply to CAPA")

    async def starttls(self, wire: _Wire) -> str | None:
        status = await self.status(wire, "STLS")
        return None if status[:3].upper() == "+OK" else status

    async def logout(self, wire: _Wire) -> str:
        return await self.status(wire, "QUIT")


class _Smtp:
    name = "SMTP"
    starttls_command = "STARTTLS"
    capability_command = "EHLO"
    logout_command = "QUIT"

    async def reply(self, wire: _Wire) -> list[bytes]:
        lines: list[bytes] = []
        for _ in range(MAX_LINES):
            line = await wire.line()
            lines.append(line)
            if smtp_is_last_line(line):
                return lines
        raise ProtocolError(f"more than {MAX_LINES} lines in one reply")

    async def greet(self, wire: _Wire) -> str:
        code, texts = smtp_reply(await self.reply(wire))
        if code != 220:
            raise ProtocolError(f"the server refuses the connection: {code} {shorten(texts[0])}")
        return f"{code} {texts[0]}"

    async def capabilities(self, wire: _Wire) -> Capabilities:
        await wire.send(f"EHLO {wire.address_literal()}")
        return smtp_capabilities(await self.reply(wire))

    async def starttls(self, wire: _Wire) -> str | None:
        await wire.send("STARTTLS")
        code, texts = smtp_reply(await self.reply(wire))
        return None if code == 220 else f"{code} {' '.join(texts)}"

    async def logout(self, wire: _Wire) -> str:
        await wire.send("QUIT")
        code, texts = smtp_reply(await self.reply(wire))
        return f"{code} {texts[-1]}"


_Dialect = _Imap | _Pop3 | _Smtp

_APOP_TIMESTAMP = re.compile(r"<[^<>\s@]+@[^<>\s]+>")

_IMPLICIT_PORT = {"imap": 993, "pop3": 995, "smtp": 465}
_STARTTLS_PORT = {"imap": 143, "pop3": 110, "smtp": 587}


def _ssl_reason(exc: BaseException) -> str:
    """``[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)`` → the words alone."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return shorten(str(exc)) or type(exc).__name__


def _cert_fix(code: int, host: str) -> str:
    if code in (9, 10):  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
        return "Renew the certificate (and make sure the server reloads it); check the clock."
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return (
            f"Use a certificate whose subjectAltName includes {host}, or advertise a host name "
            "the certificate is issued for."
        )
    if code in (2, 18, 19, 20, 21):  # no issuer, self-signed, not trusted, cannot verify
        return (
            "Send the full chain (server certificate, then the intermediates) from an authority "
            "clients trust; to test against a private authority, give the probe --ca-file."
        )
    return "Fix the certificate so that it verifies for this host name."


class _Check:
    """One endpoint's conversation, recorded as steps and findings."""

    def __init__(
        self, network: Network, endpoint: MailEndpoint, clock: Clock, timeout: float
    ) -> None:
        self.network = network
        self.endpoint = endpoint
        self.clock = clock
        self.timeout = timeout
        self.server_name = endpoint.host.rstrip(".")
        self.target = endpoint.target
        dialects: dict[str, type[_Dialect]] = {"imap": _Imap, "pop3": _Pop3, "smtp": _Smtp}
        self.protocol = dialects[endpoint.kind]()
        mode = {"implicit": "implicit TLS", "starttls": "STARTTLS", "none": "no TLS"}
        self.label = f"{self.protocol.name} ({mode[endpoint.tls]})"
        self.steps: list[Step] = []
        self.findings: list[Finding] = []
        self.tls_version: str | None = None
        self.mechanisms: tuple[str, ...] = ()
        self.apop = False
        self._action = ""
        self._timer: Timer | None = None
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.deadline = self.start + timeout
        self.soft_deadline = self.start + timeout * 0.95
        """For waits that report their own timeout before the whole check runs out."""

    # -- recording

    def begin(self, action: str) -> None:
        self._action = f"{self.protocol.name} {action}"
        self._timer = Timer(self.clock)

    def end(self, outcome: Outcome, detail: str, tls: str | None = None) -> None:
        if self._timer is None:
            return
        self.steps.append(
            Step(
                client="servers",
                action=self._action,
                target=self.target,
                outcome=outcome,
                detail=shorten(detail, 300),
                ms=self._timer.elapsed(),
                started_ms=self._timer.started,
                tls=tls,
            )
        )
        self._timer = None

    def report(self, severity: Severity, code: str, message: str, fix: str = "") -> None:
        assert code in CODES, code
        self.findings.append(Finding(severity, code, self.target, message, fix))

    def fail(self, code: str, message: str, fix: str = "", *, detail: str | None = None) -> None:
        self.end(Outcome.FAILED, detail or message)
        self.report(Severity.ERROR, code, f"{self.label}: {message}", fix)

    def result(self) -> EndpointResult:
        return EndpointResult(
            endpoint=self.endpoint,
            steps=tuple(self.steps),
            findings=tuple(self.findings),
            tls_version=self.tls_version,
            mechanisms=self.mechanisms,
        )

    def certificate_failed(self, exc: ssl.SSLCertVerificationError) -> None:
        why = exc.verify_message or _ssl_reason(exc)
        self.fail(
            "PROBE-SERVER-CERT",
            f"the TLS certificate does not verify for {self.server_name}: {why}",
            _cert_fix(exc.verify_code, self.server_name),
        )

    # -- the conversation

    async def run(self) -> EndpointResult:
        wires: list[_Wire] = []
        try:
            async with asyncio.timeout_at(self.deadline):
                await self.converse(wires)
        except TimeoutError:
            if self._action.endswith(" connect"):
                self.fail(
                    "PROBE-SERVER-UNREACHABLE",
                    f"no connection within {self.timeout:g} s",
                    "Check the host name, its addresses and any firewall in between.",
                )
            else:
                self.fail(
                    "PROBE-SERVER-TIMEOUT",
                    f"no answer to {self._action} within {self.timeout:g} s",
                    "Check that the server (or the proxy in front of it) is healthy.",
                    detail="no answer in time",
                )
        except Unreachable as exc:
            self.fail(
                "PROBE-SERVER-UNREACHABLE",
                f"cannot connect: {exc}",
                "Check the host name, its addresses and any firewall in between.",
            )
        except ssl.SSLCertVerificationError as exc:
            self.certificate_failed(exc)
        except ssl.SSLError as exc:
            self.fail(
                "PROBE-SERVER-TLS-FAILED",
                f"the TLS handshake failed: {_ssl_reason(exc)}",
                "Offer TLS 1.2 or 1.3 with current ciphers on this port.",
            )
        except ProtocolError as exc:
            self.fail("PROBE-SERVER-PROTOCOL", f"{exc} (during {self._action})")
        except OSError as exc:
            self.fail(
                "PROBE-SERVER-PROTOCOL",
                f"the connection failed during {self._action}: {_ssl_reason(exc)}",
            )
        finally:
            for wire in wires:
                await wire.close(min(0.5, self.deadline - self.loop.time()))
        return self.result()

    async def connect(self, wires: list[_Wire]) -> _Wire:
        connected = await self.network.open(self.endpoint.host, self.endpoint.port)
        wire = _Wire(connected)
        wires.append(wire)
        self.end(Outcome.OK, f"connected to {hostport(connected.address, connected.port)}")
        return wire

    async def converse(self, wires: list[_Wire]) -> None:
        self.begin("connect")
        wire = await self.connect(wires)
        if self.endpoint.tls == "implicit":
            await self.implicit_tls(wire, wires)
        else:
            await self.plain_start(wire)

    async def implicit_tls(self, wire: _Wire, wires: list[_Wire]) -> None:
        self.begin("TLS handshake")
        try:
            async with asyncio.timeout_at(self.start + self.timeout * HANDSHAKE_SHARE):
                await wire.start_tls(self.network.tls, self.server_name)
        except ssl.SSLCertVerificationError:
            raise
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            await self.explain_failed_handshake(exc, wires)
            return
        self.tls_established(wire)
        await self.after_tls(wire, greet=True)

    async def explain_failed_handshake(self, failure: BaseException, wires: list[_Wire]) -> None:
        """An implicit-TLS handshake failed: does the port greet in plain text instead?"""
        self.end(Outcome.FAILED, _ssl_reason(failure))
        self.begin("connect (to read a greeting without TLS)")
        greeting: str | None = None
        try:
            async with asyncio.timeout_at(self.soft_deadline):
                wire = await self.connect(wires)
                self.begin("greeting without TLS")
                greeting = line_text(await wire.line())
        except (TimeoutError, OSError, ProtocolError, Unreachable) as exc:
            self.end(Outcome.FAILED, f"no plain-text greeting either ({_ssl_reason(exc)})")
        if greeting is not None and _is_plain_text(greeting):
            self.end(Outcome.OK, greeting)
            # After the first line of a multi-line SMTP greeting, QUIT's reply would be misread.
            if not (self.endpoint.kind == "smtp" and greeting[3:4] == "-"):
                await self.logout(wire)
            port = self.endpoint.port
            self.report(
                Severity.ERROR,
                "PROBE-SERVER-TLS-MODE",
                f"{self.label}: advertised implicit TLS (SSL), but port {port} speaks plain "
                f"text (greeting {shorten(greeting, 80)!r}): it expects STARTTLS, not "
                "implicit TLS",
                f"Advertise socketType STARTTLS (Outlook: Encryption TLS) for port {port}, or "
                f"advertise the implicit-TLS port ({_IMPLICIT_PORT[self.endpoint.kind]}).",
            )
            return
        if greeting is not None:
            self.end(Outcome.FAILED, f"not a greeting: {greeting!r}")
        if isinstance(failure, TimeoutError):
            self.report(
                Severity.ERROR,
                "PROBE-SERVER-TIMEOUT",
                f"{self.label}: no answer to the TLS handshake within "
                f"{self.timeout * HANDSHAKE_SHARE:g} s, and no greeting without TLS either",
                "Check that the server (or the proxy in front of it) is healthy.",
            )
        elif isinstance(failure, ssl.SSLError):
            self.report(
                Severity.ERROR,
                "PROBE-SERVER-TLS-FAILED",
                f"{self.label}: the TLS handshake failed: {_ssl_reason(failure)}",
                "Offer TLS 1.2 or 1.3 with current ciphers on this port.",
            )
        else:
            self.report(
                Severity.ERROR,
                "PROBE-SERVER-PROTOCOL",
                f"{self.label}: the connection failed during the TLS handshake: "
                f"{_ssl_reason(failure)}",
            )

    async def plain_start(self, wire: _Wire) -> None:
        """Greeting and capabilities in clear, then (when advertised) STARTTLS."""
        self.begin("greeting")
        starttls = self.endpoint.tls == "starttls"
        if starttls:
            try:
                async with asyncio.timeout_at(self.start + self.timeout * GREETING_SHARE):
                    first = await wire.first_bytes()
            except TimeoutError:
                await self.silent_port(wire)
                return
        else:
            first = await wire.first_bytes()
        if _looks_like_tls(first):
            self.fail(
                "PROBE-SERVER-TLS-MODE",
                f"advertised STARTTLS, but port {self.endpoint.port} sent TLS records where a "
                "greeting was expected: it speaks implicit TLS",
                self.implicit_fix(),
            )
            return
        greeting = await self.protocol.greet(wire)
        self.apop = self.endpoint.kind == "pop3" and bool(_APOP_TIMESTAMP.search(greeting))
        self.end(Outcome.OK, greeting)
        caps = await self.capabilities(wire, "before TLS")
        if not starttls:
            self.mechanisms = caps.mechanisms
            self.report(
                Severity.WARNING,
                "PROBE-SERVER-NO-TLS",
                f"{self.label}: advertised without TLS: passwords and mail would cross the "
                "network in clear" + (" (the server does offer STARTTLS)" if caps.starttls else ""),
                "Advertise the implicit-TLS or STARTTLS port instead.",
            )
            self.check_auth(caps, "")
            await self.logout(wire)
            return
        self.check_cleartext(caps)
        command = self.protocol.starttls_command
        if not caps.starttls:
            self.report(
                Severity.ERROR,
                "PROBE-SERVER-NO-STARTTLS",
                f"{self.label}: advertised STARTTLS, but the server does not offer {command} "
                f"(capabilities: {shorten(' '.join(caps.words), 160) or 'none'})",
                "Enable STARTTLS with a valid certificate on this port.",
            )
            await self.logout(wire)
            return
        self.begin(command)
        refusal = await self.protocol.starttls(wire)
        if refusal is not None:
            self.fail(
                "PROBE-SERVER-NO-STARTTLS",
                f"the server offers {command} but refuses it: {shorten(refusal)!r}",
                "Give this port a certificate and key so that STARTTLS works.",
            )
            await self.logout(wire)
            return
        await wire.start_tls(self.network.tls, self.server_name)
        self.tls_established(wire)
        await self.after_tls(wire, greet=False)

    def implicit_fix(self) -> str:
        port = self.endpoint.port
        return (
            f"Advertise socketType SSL (Outlook: SSL on, Encryption SSL) for port {port}, or "
            f"advertise the STARTTLS port ({_STARTTLS_PORT[self.endpoint.kind]})."
        )

    async def silent_port(self, wire: _Wire) -> None:
        """A STARTTLS port sent no greeting: does it wait for a TLS handshake instead?"""
        waited = self.timeout * GREETING_SHARE
        self.end(Outcome.FAILED, f"no greeting within {waited:g} s")
        self.begin("TLS handshake (no greeting: implicit TLS?)")
        port = self.endpoint.port
        try:
            async with asyncio.timeout_at(self.soft_deadline):
                await wire.start_tls(self.network.tls, self.server_name)
        except ssl.SSLCertVerificationError as exc:
            self.fail(
                "PROBE-SERVER-TLS-MODE",
                f"advertised STARTTLS, but port {port} sent no greeting and answered a TLS "
                f"handshake: it speaks implicit TLS (its certificate fails too: "
                f"{exc.verify_message})",
                self.implicit_fix(),
            )
            return
        except TimeoutError:
            self.fail(
                "PROBE-SERVER-TIMEOUT",
                f"no greeting within {waited:g} s, and no answer to a TLS handshake either",
                "Check that the server (or the proxy in front of it) is healthy.",
                detail="no answer in time",
            )
            return
        except OSError as exc:
            self.fail(
                "PROBE-SERVER-TIMEOUT",
                f"no greeting within {waited:g} s; a TLS handshake failed: {_ssl_reason(exc)}",
                "Check that the server (or the proxy in front of it) is healthy.",
            )
            return
        version = self.tls_established(wire)
        self.report(
            Severity.ERROR,
            "PROBE-SERVER-TLS-MODE",
            f"{self.label}: advertised STARTTLS, but port {port} speaks implicit TLS: it sent no "
            f"greeting until a TLS handshake, which succeeded ({version})",
            self.implicit_fix(),
        )
        self.begin("greeting")
        try:
            async with asyncio.timeout_at(self.soft_deadline):
                greeting = await self.protocol.greet(wire)
        except (TimeoutError, OSError, ProtocolError) as exc:
            self.end(Outcome.NOTICE, f"no greeting over TLS either ({_ssl_reason(exc)})")
            return
        self.end(Outcome.OK, f"over TLS: {greeting}")
        await self.logout(wire)

    def tls_established(self, wire: _Wire) -> str:
        ssl_object = wire.ssl_object()
        version = (ssl_object.version() if ssl_object else None) or "TLS"
        cipher = ssl_object.cipher() if ssl_object else None
        until = ""
        cert = ssl_object.getpeercert() if ssl_object else None
        not_after = cert.get("notAfter") if cert else None
        if isinstance(not_after, str):
            with contextlib.suppress(ValueError, OverflowError):
                seconds = ssl.cert_time_to_seconds(not_after)
                day = datetime.datetime.fromtimestamp(seconds, datetime.UTC).date()
                until = f" until {day.isoformat()}"
        summary = ", ".join(
            [version, *([cipher[0]] if cipher else []), f"certificate valid for {self.server_name}"]
        )
        self.tls_version = version
        self.end(Outcome.OK, f"TLS established ({version})", tls=summary + until)
        return version

    async def after_tls(self, wire: _Wire, *, greet: bool) -> None:
        if greet:
            self.begin("greeting")
            greeting = await self.protocol.greet(wire)
            self.apop = self.endpoint.kind == "pop3" and bool(_APOP_TIMESTAMP.search(greeting))
            self.end(Outcome.OK, greeting)
        caps = await self.capabilities(wire, "after TLS")
        self.mechanisms = caps.mechanisms
        self.check_auth(caps, " after TLS")
        await self.logout(wire)

    async def capabilities(self, wire: _Wire, when: str) -> Capabilities:
        self.begin(self.protocol.capability_command)
        caps = await self.protocol.capabilities(wire)
        mechanisms = " ".join(caps.mechanisms) or "none"
        self.end(Outcome.OK, f"{when}: {' '.join(caps.words)}; SASL: {mechanisms}")
        return caps

    def check_cleartext(self, caps: Capabilities) -> None:
        offers = cleartext_offers(self.endpoint.kind, caps)
        if not offers:
            return
        fix = {
            "imap": "Dovecot: disable_plaintext_auth = yes (auth_allow_cleartext = no in 2.4).",
            "pop3": "Dovecot: disable_plaintext_auth = yes (auth_allow_cleartext = no in 2.4).",
            "smtp": "Postfix: smtpd_tls_auth_only = yes (or smtpd_tls_security_level = encrypt).",
        }[self.endpoint.kind]
        self.report(
            Severity.WARNING,
            "PROBE-SERVER-PLAINTEXT-AUTH",
            f"{self.label}: before STARTTLS the server already offers {', '.join(offers)}: "
            "passwords can be sent in clear",
            fix,
        )

    def check_auth(self, caps: Capabilities, when: str) -> None:
        kind = self.endpoint.kind
        verdicts = {
            method: method_offered(kind, method, caps, apop=self.apop)
            for method in dict.fromkeys(self.endpoint.auth)
        }
        checked = {m: v for m, v in verdicts.items() if v is not None}
        missing = [m for m, v in checked.items() if not v]
        severity = Severity.ERROR if len(missing) == len(checked) else Severity.WARNING
        offered = [f"SASL {' '.join(caps.mechanisms)}" if caps.mechanisms else "no SASL mechanism"]
        if caps.password_command:
            offered.append({"imap": "the LOGIN command", "pop3": "USER"}.get(kind, ""))
        for method in missing:
            self.report(
                severity,
                "PROBE-SERVER-AUTH-MISSING",
                f"{self.label}: advertised authentication {method} needs "
                f"{method_needs(kind, method)}{when}, but the server offers "
                f"{' and '.join(o for o in offered if o)}",
                f"Enable {method_needs(kind, method)} on the server, or stop advertising {method}.",
            )

    async def logout(self, wire: _Wire) -> None:
        """End the session politely; a server that does not answer is only noted."""
        self.begin(self.protocol.logout_command)
        try:
            async with asyncio.timeout_at(min(self.soft_deadline, self.loop.time() + 1.0)):
                reply = await self.protocol.logout(wire)
        except (TimeoutError, OSError, ProtocolError) as exc:
            self.end(Outcome.NOTICE, f"no proper reply ({_ssl_reason(exc)})")
            return
        self.end(Outcome.OK, reply)


async def check_endpoint(
    network: Network, endpoint: MailEndpoint, clock: Clock, *, timeout: float = DEFAULT_TIMEOUT
) -> EndpointResult:
    """Connect to ``endpoint`` as a client would and check it; never raises for network trouble.

    The whole check, however the server behaves, ends within ``timeout`` seconds, closing the
    connection included.
    """
    check = _Check(network, endpoint, clock, timeout)
    return await check.run()


async def check_endpoints(
    network: Network,
    endpoints: Sequence[MailEndpoint],
    clock: Clock,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[EndpointResult, ...]:
    """Check every endpoint at the same time, each (kind, host, port, TLS mode) once.

    Two clients often name the same server with different authentication lists; the one check
    of that server looks for the union of them (in first-seen order).
    """
    merged: dict[tuple[str, str, int, str], MailEndpoint] = {}
    for endpoint in endpoints:
        key = (endpoint.kind, endpoint.host.rstrip(".").lower(), endpoint.port, endpoint.tls)
        seen = merged.get(key)
        if seen is None:
            merged[key] = replace(endpoint, auth=tuple(dict.fromkeys(endpoint.auth)))
        else:
            merged[key] = replace(seen, auth=tuple(dict.fromkeys(seen.auth + endpoint.auth)))
    results = await asyncio.gather(
        *(check_endpoint(network, e, clock, timeout=timeout) for e in merged.values())
    )
    return tuple(results)
