"""One HTTP exchange as a mail client makes it, bounded and explained.

httpcore does the HTTP/1.1; this module decides where it connects (:class:`Network`: the chosen
resolver and ``--connect-to``), bounds the whole exchange in time and the body in size, follows
no redirect by itself (the client modules decide what a client follows), and turns every failure
into :class:`HttpFailure` with one line that says what went wrong: DNS, refused, timeout, the TLS
verification message (expired, wrong name, untrusted), an oversized body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpcore

from mailwarden.discovery.net import Network, Unreachable, hostport

MAX_BODY = 256 * 1024
"""Autoconfig and Autodiscover documents are a few kB; anything beyond this is refused."""

FailureKind = Literal[
    "dns", "connect", "timeout", "tls", "tls-refused", "tls-handshake", "too-large", "protocol"
]
"""``tls``: the certificate was not accepted; ``tls-refused``: the server declined TLS for this
name (no certificate for it, as a one-certificate autoconfig host should); ``tls-handshake``:
any other handshake failure (plain HTTP on the TLS port, no protocol version in common)."""


class HttpFailure(Exception):
    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class TlsSummary:
    version: str
    names: tuple[str, ...]
    """DNS names in the server certificate's subjectAltName."""
    not_after: str

    def line(self, host: str) -> str:
        return f"{self.version}, certificate valid for {host} until {self.not_after}"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its first value."""
    body: bytes
    address: str
    """The address:port the request went to."""
    tls: TlsSummary | None
    ms: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def brief(self) -> str:
        kind = self.content_type.split(";")[0].strip() or "no content type"
        return f"{self.status}, {kind}, {len(self.body)} bytes"


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's own asyncio backend, but addresses come from :class:`Network`."""

    def __init__(self, network: Network) -> None:
        self._network = network
        self._inner = httpcore.AnyIOBackend()
        self.connected = ""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pairs, via = await self._network.candidates(host, port)
        errors: list[str] = []
        timed_out = True
        for address, target_port in pairs:
            try:
                stream = await self._inner.connect_tcp(
                    address, target_port, timeout=self._network.connect_timeout
                )
            except httpcore.ConnectTimeout:
                errors.append(f"{hostport(address, target_port)}: no answer in time")
            except (httpcore.ConnectError, OSError) as exc:
                timed_out = False
                errors.append(f"{hostport(address, target_port)}: {_reason(exc)}")
            else:
                self.connected = hostport(address, target_port)
                return stream
        raise Unreachable("; ".join(errors) + via, kind="timeout" if timed_out else "connect")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _reason(exc: BaseException) -> str:
    """The innermost cause's words: 'Connection refused', not httpcore's wrapper."""
    seen: BaseException | None = exc
    text = str(exc)
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        if isinstance(seen, OSError) and seen.strerror:
            text = seen.strerror
        seen = seen.__cause__ or seen.__context__
    return text or type(exc).__name__


_TLS_REASONS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port",
    "TLSV1_UNRECOGNIZED_NAME": "the server has no certificate for this name",
    "UNSUPPORTED_PROTOCOL": "the server offers only TLS versions below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server offers only TLS versions below 1.2",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no cipher or key exchange in common",
}


_REFUSALS = {"TLSV1_UNRECOGNIZED_NAME"}


def _tls_failure(exc: BaseException) -> HttpFailure | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = seen.verify_message or seen.reason
            return HttpFailure(f"certificate not accepted: {reason}", "tls")
        if isinstance(seen, ssl.SSLError):
            reason = seen.reason or str(seen)
            explained = _TLS_REASONS.get(reason)
            text = f"{explained} ({reason})" if explained else reason
            kind: FailureKind = "tls-refused" if reason in _REFUSALS else "tls-handshake"
            return HttpFailure(f"TLS handshake failed: {text}", kind)
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_summary(stream: Any) -> TlsSummary | None:
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert() or {}
    names = tuple(value for key, value in cert.get("subjectAltName", ()) if key == "DNS")
    return TlsSummary(ssl_object.version() or "TLS", names, str(cert.get("notAfter", "?")))


async def request(
    network: Network,
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float = 5.0,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """Send one request and read the answer (at most ``max_body`` bytes, within ``timeout``)."""
    started = time.perf_counter()
    backend = _Backend(network)
    extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
    all_headers = [("Accept", "*/*"), ("Connection", "close"), *headers]
    try:
        async with (
            asyncio.timeout(timeout),
            httpcore.AsyncConnectionPool(
                # Only an https URL needs the context: building one reads the system's CA
                # store, ~20 ms an OCSP or CRL request over plain HTTP need not pay.
                ssl_context=network.tls if url.lower().startswith("https:") else None,
                network_backend=backend,
                max_connections=1,
            ) as pool,
            pool.stream(
                method, url, headers=all_headers, content=body, extensions=extensions
            ) as response,
        ):
            tls = _tls_summary(response.extensions.get("network_stream"))
            declared = _header(response.headers, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body:
                raise HttpFailure(
                    f"{response.status}, body of {declared} bytes is over the "
                    f"{max_body}-byte limit",
                    "too-large",
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > max_body:
                    raise HttpFailure(
                        f"{response.status}, body over the {max_body}-byte limit", "too-large"
                    )
                chunks.append(chunk)
            names: dict[str, str] = {}
            for name, value in response.headers:
                names.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            return HttpResponse(
                method,
                url,
                response.status,
                names,
                b"".join(chunks),
                backend.connected,
                tls,
                (time.perf_counter() - started) * 1000,
            )
    except HttpFailure:
        raise
    except Unreachable as exc:
        raise HttpFailure(str(exc), exc.kind) from None
    except TimeoutError:
        raise HttpFailure(f"no complete answer within {timeout:g} s", "timeout") from None
    except httpcore.TimeoutException as exc:
        raise HttpFailure(
            f"no complete answer within {timeout:g} s ({_reason(exc)})", "timeout"
        ) from None
    except (httpcore.ConnectError, ssl.SSLError, OSError) as exc:
        refused = _tls_failure(exc)
        if refused is not None:
            raise refused from None
        raise HttpFailure(f"connection failed: {_reason(exc)}", "connect") from None
    except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
        refused = _tls_failure(exc)
        if refused is not None:
            raise refused from None
        raise HttpFailure(f"not a valid HTTP answer: {_reason(exc)}", "protocol") from None


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
