"""A small clamd client: the ``z``-commands the antivirus check needs, and their reply parsers.

clamd (ClamAV's daemon) speaks a line protocol on a unix socket or TCP: a command prefixed with
``z`` is terminated by a NUL byte, and so is the reply. One command per connection (no
``IDSESSION``): the check measures what one MTA client sees, connect included, and a clamd that
hangs on one command cannot spoil the next. ``INSTREAM`` sends the data in chunks, each with a
4-byte big-endian length, and a zero-length chunk to end.

The reply is untrusted: it is read up to :data:`MAX_REPLY` bytes and :data:`timeout` seconds,
and the parsers (pure) take any text and return ``None`` for what they do not recognise, so a
wrong answer becomes a finding in the check, never an exception.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mailwarden.discovery.mailcaps import shorten
from mailwarden.discovery.net import Network, Unreachable

MAX_REPLY = 4096
"""clamd's longest reply to these commands is a virus name line (well under 1 KiB)."""

CHUNK = 8192

CLEAN_STREAM = b"mailwarden antivirus audit: a clean test message, nothing to find here.\r\n"
"""What the check sends as the harmless stream (a clamd that flags it rejects good mail)."""

# The EICAR test file (a harmless string every virus scanner detects by agreement), kept here
# reversed and XOR-masked so that no scanner quarantines this source file or the package; it
# is unmasked only in memory, when the check sends it.
_EICAR_MASKED = (
    "701271127e7b1f16131c770e091f0e77090f08130c130e141b771e081b1e141b0e09"
    "77081b19131f7e276d7319196d73040a726e6f02000a066e010a1b1a7f0a7b156f02"
)
_MASK = 0x5A


def eicar() -> bytes:
    """The 68-byte EICAR test file, built at run time from its masked form."""
    return bytes(byte ^ _MASK for byte in bytes.fromhex(_EICAR_MASKED))[::-1]


Kind = Literal["unix", "tcp"]


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: ``unix:/run/clamav/clamd.ctl`` or ``tcp:HOST:PORT``."""

    kind: Kind
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(text: str) -> ClamdAddress:
    """The site file's ``clamd`` value (validated by the model) as an address."""
    kind, _, rest = text.partition(":")
    if kind == "unix":
        return ClamdAddress("unix", path=rest)
    host, _, port = rest.rpartition(":")
    return ClamdAddress("tcp", host=host.strip("[]"), port=int(port))


# --- replies (pure) -------------------------------------------------------------------------


def reply_text(raw: bytes) -> str:
    """A reply without its NUL terminator, as text (bytes that are not UTF-8 replaced)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


@dataclass(frozen=True, slots=True)
class ClamdVersion:
    """``VERSION``: ``ClamAV 1.4.6/27999/Fri Dec  4 17:58:31 2026``, or ``ClamAV 1.4.6`` when
    clamd loaded no official ``daily`` database (custom signatures only, or daily is lost)."""

    engine: str
    signatures: int | None = None
    """The daily database's version; None when clamd does not say."""
    published: datetime | None = None
    """When that database was built, naive: clamd prints it in its host's local time."""


_VERSION = re.compile(r"ClamAV ([0-9A-Za-z.+~_-]{1,40})(?:/(\d{1,10})/(.{1,60}))?")
_CTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +([A-Z][a-z]{2}) +(\d{1,2})"
    r" +(\d{1,2}):(\d{2}):(\d{2}) +(\d{4})"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_ctime(text: str) -> datetime | None:
    """``Thu Dec  3 09:00:00 2026`` (C's ctime, English whatever the locale) as a naive time."""
    match = _CTIME.fullmatch(text.strip())
    if match is None or match.group(1) not in _MONTHS:
        return None
    month = _MONTHS.index(match.group(1)) + 1
    day, hour, minute, second, year = (int(match.group(i)) for i in (2, 3, 4, 5, 6))
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:  # Feb 31, hour 99: not a time
        return None


def parse_version(text: str) -> ClamdVersion | None:
    """A ``VERSION`` reply, or None when it is not one; a date it cannot read is left out."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        return None
    engine, number, date = match.groups()
    if number is None:
        return ClamdVersion(engine)
    return ClamdVersion(engine, int(number), parse_ctime(date))


@dataclass(frozen=True, slots=True)
class ScanReply:
    """``stream: OK``, ``stream: NAME FOUND`` or ``... ERROR``."""

    verdict: Literal["clean", "found", "error"]
    name: str = ""
    """The signature that matched (found), or clamd's reason (error)."""


_FOUND = re.compile(r"stream: (.{1,300}) FOUND")
_ERROR = re.compile(r"(.{0,300}?) ?ERROR")


def parse_scan(text: str) -> ScanReply | None:
    """An ``INSTREAM`` reply, or None when it is none of the three."""
    text = text.strip()
    if text == "stream: OK":
        return ScanReply("clean")
    if (found := _FOUND.fullmatch(text)) is not None:
        return ScanReply("found", found.group(1))
    if (error := _ERROR.fullmatch(text)) is not None:
        return ScanReply("error", error.group(1).removeprefix("stream: ") or "ERROR")
    return None


def instream(data: bytes, chunk: int = CHUNK) -> bytes:
    """``zINSTREAM`` with ``data`` in chunks (4-byte big-endian length each) and the end mark."""
    parts = [b"zINSTREAM\0"]
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        parts += [struct.pack(">I", len(piece)), piece]
    parts.append(struct.pack(">I", 0))
    return b"".join(parts)


# --- the exchange (I/O) ---------------------------------------------------------------------

FailureKind = Literal["down", "unreachable", "timeout", "protocol"]


class ClamdFailure(Exception):
    """No usable reply. ``kind``: ``down`` (no socket, refused), ``unreachable`` (could not
    tell: permission, DNS, a connect that timed out over TCP), ``timeout`` (connected, no
    answer in time), ``protocol`` (closed without answer, or too long)."""

    def __init__(self, message: str, *, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


@dataclass(frozen=True, slots=True)
class Exchange:
    reply: str
    seconds: float
    """From connect to the reply's end: what an MTA's client waits."""


async def _connect(
    address: ClamdAddress, network: Network, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            if address.kind == "unix":
                return await asyncio.open_unix_connection(address.path)
            connected = await network.open(address.host, address.port)
            return connected.reader, connected.writer
    except TimeoutError:
        kind: FailureKind = "timeout" if address.kind == "unix" else "unreachable"
        raise ClamdFailure(f"{address}: no connection within {timeout:g} s", kind=kind) from None
    except Unreachable as exc:
        kind = "down" if exc.kind == "connect" else "unreachable"
        raise ClamdFailure(f"{address}: {exc}", kind=kind) from None
    except FileNotFoundError:
        raise ClamdFailure(f"{address}: no such socket", kind="down") from None
    except PermissionError:
        raise ClamdFailure(
            f"{address}: permission denied (the audit's user may not use the socket)",
            kind="unreachable",
        ) from None
    except OSError as exc:  # refused, not a socket, ...
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ClamdFailure(f"{address}: {reason}", kind="down") from None


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """Up to the NUL terminator or the end of the connection, at most :data:`MAX_REPLY`."""
    received = b""
    while b"\0" not in received:
        piece = await reader.read(MAX_REPLY + 1 - len(received))
        if not piece:
            break
        received += piece
        if len(received) > MAX_REPLY:
            raise ClamdFailure(f"a reply longer than {MAX_REPLY} bytes", kind="protocol")
    return received


async def exchange(
    address: ClamdAddress, network: Network, request: bytes, timeout: float
) -> Exchange:
    """Send one command on a new connection and read its reply, all within ``timeout``."""
    started = time.perf_counter()
    reader, writer = await _connect(address, network, timeout)
    try:
        left = max(timeout - (time.perf_counter() - started), 0.001)
        try:
            async with asyncio.timeout(left):
                try:
                    writer.write(request)
                    await writer.drain()
                except OSError:
                    pass  # clamd may close early (a size limit): its reply is still there
                raw = await _read_reply(reader)
        except TimeoutError:
            raise ClamdFailure(f"no answer within {timeout:g} s", kind="timeout") from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ClamdFailure(f"the connection failed: {reason}", kind="protocol") from None
    finally:
        writer.close()
    if not raw.strip(b"\0 \r\n"):
        raise ClamdFailure("the connection closed without an answer", kind="protocol")
    return Exchange(reply_text(raw), time.perf_counter() - started)


def quoted(reply: str) -> str:
    """A reply for a message: one printable, short line."""
    return repr(shorten(reply, 80))
