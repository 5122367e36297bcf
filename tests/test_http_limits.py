"""Hostile clients against the real ``mailwarden serve`` HTTP listener (one worker, real
sockets): oversized heads are answered 431 (URLs 414) and closed while the worker's memory
stays bounded, heads and bodies that never finish are closed after ``header_timeout`` and
``body_timeout``, idle keep-alive connections after ``idle_timeout``, connections beyond
``max_connections`` are answered 503, and meanwhile another client's ``/healthz`` is answered
promptly.

Every case is bounded in time and size: sockets have timeouts, floods have a deadline and a
byte budget. ``pytest -s`` prints the measured figures the README quotes.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.directory.embedded import UserStore, parse_users_csv
from mailwarden.server.protocol import SLICE, pipelined_head_bytes
from tests.fixtures.paths import EXAMPLES
from tests.fixtures.server import running_server, server_pid
from tests.fixtures.wait import wait_until

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
IDLE_TIMEOUT = 1.5
MAX_CONNECTIONS = 24
MAX_HEAD = 16384
"""The default ``max_header_bytes`` (not set in the test's site file)."""
MAX_URL = 8192
"""The default ``max_request_line_bytes``."""
LATE = 1.0
"""How much after its timeout a connection may close: the sweep runs every
``timeout / 4`` (0.375 s here), plus scheduling on a loaded machine."""
PROBE_MAX_S = 0.5
"""The longest another client may wait for ``/healthz`` during an attack."""
RSS_GROWTH_MB = 10.0
"""What eight connections streaming endless headers may add to the worker's memory (before
the bounds: 282 MB for eight 32 MiB headers)."""
STREAMERS = 8
STREAM_SECONDS = 4.0
STREAM_BUDGET = 32 << 20
"""Bytes one streaming connection tries to send as one header."""

HEAD_START = b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\nX-Filler: "

SERVER = """
header_timeout = {t}
body_timeout = {t}
idle_timeout = {t}
max_connections = {cap}
"""


@dataclass
class Server:
    port: int
    pid: int

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def connections(self) -> int:
        """Connections to the server the worker has not closed (ESTABLISHED, CLOSE_WAIT)."""
        port = f":{self.port:04X}"
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return sum(
            1 for line in lines if (f := line.split())[1].endswith(port) and f[3] in {"01", "08"}
        )

    def settled(self) -> None:
        """Wait until the worker holds no connection from an earlier case."""
        wait_until(lambda: self.connections() == 0, 10, what="earlier connections closed")

    def rss_mb(self) -> float:
        """VmRSS of the worker (with one worker: the server process), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def _site(tmp: Path) -> Path:
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"')
    limits = SERVER.format(t=HEADER_TIMEOUT, cap=MAX_CONNECTIONS)
    text = text.replace("[server]\n", "[server]\n" + limits.lstrip("\n"), 1)
    (tmp / "site.toml").write_text(text, encoding="utf-8")
    store = UserStore(tmp / "users.sqlite")
    records = parse_users_csv((EXAMPLES / "users.csv").read_text(encoding="utf-8"), "users.csv")
    store.import_records(records, source="users.csv")
    store.close()
    return tmp / "site.toml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(_site(tmp_path_factory.mktemp("http-limits")), workers=1) as base:
        yield Server(port=int(base.rsplit(":", 1)[1]), pid=server_pid(base))


def _until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    sock.settimeout(limit)
    start = time.monotonic()
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - start


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


class Answers:
    """Whole answers (head and ``Content-Length`` body) read off one connection in turn."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"closed within {what} after {self.buffer[:200]!r}"
        self.buffer += chunk

    def next(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill("a head")
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        fields = head.lower().split(b"\r\n")[1:]
        length = next(int(f[15:]) for f in fields if f.startswith(b"content-length:"))
        while len(rest) < length:
            self._fill("a body")
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def _response(sock: socket.socket) -> bytes:
    """The one answer to the one request sent on a kept-alive connection."""
    answers = Answers(sock)
    answer = answers.next()
    assert not answers.buffer, "more than one answer"
    return answer


def _get(server: Server, path: str = "/healthz", *, extra: bytes = b"") -> bytes:
    with server.connect() as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: autoconfig.example.edu\r\nConnection: close\r\n".encode()
            + extra
            + b"\r\n"
        )
        return _until_closed(sock)[0]


@dataclass
class Probe:
    """Another client asking for ``/healthz`` on a fresh connection every 50 ms."""

    server: Server
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                answer = _get(self.server)
            except OSError as exc:
                self.failures.append(repr(exc))
            else:
                if not answer.startswith(b"HTTP/1.1 200"):
                    self.failures.append(answer[:40].decode(errors="replace"))
                self.latencies.append(time.monotonic() - start)
            self.stop.wait(0.05)

    def check(self, what: str) -> str:
        assert not self.failures, self.failures[:3]
        assert self.latencies, "the probe got no answer at all"
        worst = max(self.latencies)
        assert worst < PROBE_MAX_S, f"/healthz took {worst:.3f} s during {what}"
        median = statistics.median(self.latencies)
        return f"/healthz median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms"


@contextlib.contextmanager
def probing(server: Server) -> Iterator[Probe]:
    probe = Probe(server)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        probe.stop.set()
        thread.join(10)


# -- head size -----------------------------------------------------------------------------


def _head_of(size: int) -> bytes:
    """A complete request head of exactly ``size`` bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\nConnection: close\r\n"
    pad = size - len(start) - len(b"X-Pad: \r\n\r\n")
    return start + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"


def test_head_at_the_cap_is_answered_one_byte_more_is_431(server: Server) -> None:
    for send in (_head_of(MAX_HEAD), _head_of(MAX_HEAD + 1)):
        with server.connect() as sock:
            sock.sendall(send)
            answer, took = _until_closed(sock)
        assert _status(answer) == (200 if len(send) <= MAX_HEAD else 431)
        assert took < 2.0


def test_many_small_headers_within_the_cap_pass(server: Server) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))  # 9-10 bytes each
    assert _status(_get(server, extra=headers)) == 200


def test_url_over_the_request_line_cap_is_414(server: Server) -> None:
    at_cap = _get(server, "/" + "a" * (MAX_URL - 1))
    assert _status(at_cap) == 404  # ours lets it through; the application does not know it
    over = _get(server, "/" + "a" * MAX_URL)
    assert _status(over) == 414
    with server.connect() as sock:  # a URL that never ends: refused without waiting for it
        sock.sendall(b"GET /" + b"a" * (MAX_URL + SLICE))
        answer, took = _until_closed(sock)
    assert _status(answer) == 414
    assert took < 2.0


def test_endless_header_is_431_and_the_stream_is_cut(server: Server) -> None:
    """A header line growing towards 128 MiB (before the bounds: read to the end, 200)."""
    with server.connect() as sock:
        sock.sendall(HEAD_START + b"a" * (MAX_HEAD + 1))
        sock.settimeout(5)
        answer = sock.recv(65536)
        assert _status(answer) == 431
        assert sock.recv(65536) == b""  # our side is shut right after the answer
        taken = _stream(sock, 128 << 20, time.monotonic() + 10)
    # What the kernel buffers on loopback plus what the server reads and drops before it
    # resets the connection (256 KiB): nowhere near 128 MiB.
    print(f"\nendless header: cut off after {taken / (1 << 20):.1f} MiB sent")
    assert taken < 16 << 20


def _stream(sock: socket.socket, budget: int, deadline: float) -> int:
    """Send filler until the server cuts the connection, ``budget`` bytes or ``deadline``."""
    chunk = b"a" * 65536
    sent = 0
    sock.settimeout(2)
    with contextlib.suppress(OSError):  # reset, broken pipe, or a full buffer that stays full
        while sent < budget and time.monotonic() < deadline:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def test_streaming_huge_headers_keeps_the_worker_small_and_responsive(server: Server) -> None:
    """Eight connections at a time stream endless headers (reconnecting when cut) for four
    seconds; the worker's RSS is sampled and another client asks for /healthz meanwhile."""
    server.settled()
    before = server.rss_mb()
    deadline = time.monotonic() + STREAM_SECONDS
    cuts: list[int] = []

    def attack() -> None:
        while time.monotonic() < deadline:
            try:
                sock = server.connect(timeout=2)
            except OSError:
                continue
            with sock:
                with contextlib.suppress(OSError):
                    sock.sendall(HEAD_START)
                cuts.append(_stream(sock, STREAM_BUDGET, deadline))

    samples: list[float] = []
    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(STREAMERS)]
    with probing(server) as probe:
        for thread in attackers:
            thread.start()
        while any(t.is_alive() for t in attackers) and time.monotonic() < deadline + 10:
            samples.append(server.rss_mb())
            time.sleep(0.05)
        for thread in attackers:
            thread.join(10)
    after = server.rss_mb()
    peak = max(samples)
    latency = probe.check("the header flood")
    print(
        f"\n{STREAMERS} connections streaming headers: {len(cuts)} connections cut after "
        f"{statistics.median(cuts) / (1 << 20):.2f} MiB (median), "
        f"{sum(cuts) / (1 << 20):.0f} MiB sent in all; worker RSS {before:.1f} -> peak "
        f"{peak:.1f} -> {after:.1f} MB; {latency}"
    )
    assert all(sent < STREAM_BUDGET for sent in cuts), "a header stream was never cut"
    assert peak - before < RSS_GROWTH_MB


# -- timeouts ------------------------------------------------------------------------------


def _assert_closed_in_time(took: float, timeout: float, what: str) -> None:
    assert timeout - 0.1 <= took <= timeout + LATE, f"{what}: closed after {took:.2f} s"


def test_silent_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    with server.connect() as sock:
        answer, took = _until_closed(sock)
    assert answer == b""  # nothing was asked, nothing is answered
    _assert_closed_in_time(took, HEADER_TIMEOUT, "a connection that sends nothing")


def test_slowloris_head_is_closed_after_the_header_timeout(server: Server) -> None:
    """Half a head, then one byte every 0.1 s: dripping does not extend the deadline."""
    with probing(server) as probe, server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\n")
        drip = threading.Thread(target=_drip, args=(sock, b"X-Slow: 1\r\n"), daemon=True)
        drip.start()
        answer, _ = _until_closed(sock)
        took = time.monotonic() - start
    assert _status(answer) == 408
    _assert_closed_in_time(took, HEADER_TIMEOUT, "a dripping head")
    print(f"\nslowloris head closed after {took:.2f} s; {probe.check('slowloris')}")


def _drip(sock: socket.socket, pattern: bytes) -> None:
    """One byte of ``pattern`` after another every 0.1 s until the server closes."""
    with contextlib.suppress(OSError):
        for _ in range(200):
            for byte in pattern:
                sock.send(bytes([byte]))
                time.sleep(0.1)


@pytest.mark.parametrize(
    ("head", "trickle"),
    [
        (b"Content-Length: 100\r\n\r\nab", b""),
        (b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", b"1\r\nx\r\n"),
    ],
    ids=["content-length-short", "chunked-endless"],
)
def test_unfinished_body_is_closed_after_the_body_timeout(
    server: Server, head: bytes, trickle: bytes
) -> None:
    with probing(server) as probe, server.connect() as sock:
        start = time.monotonic()
        sock.sendall(
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.example.edu\r\n"
            b"Content-Type: text/xml\r\n" + head
        )
        if trickle:  # a new chunk now and then: the body never ends
            threading.Thread(target=_drip, args=(sock, trickle), daemon=True).start()
        answer, _ = _until_closed(sock)
        took = time.monotonic() - start
    assert _status(answer) == 408
    _assert_closed_in_time(took, BODY_TIMEOUT, "an unfinished body")
    print(f"\nunfinished body closed after {took:.2f} s; {probe.check('an unfinished body')}")


def test_idle_keepalive_connection_is_closed_after_the_idle_timeout(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):  # requests on one connection keep it open
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\n\r\n")
            answer = _response(sock)
            assert _status(answer) == 200
            assert b"connection: close" not in answer.lower()
        answer, took = _until_closed(sock)
    assert answer == b""
    _assert_closed_in_time(took, IDLE_TIMEOUT, "an idle keep-alive connection")


def test_client_that_pipelines_and_reads_nothing_is_bounded(server: Server) -> None:
    """Pipelined requests whose answers are never read: the server parses no further than
    the answers it can give (before the bounds, uvicorn queued every request of every read:
    about 100 MB for 5 MB of requests) and gives up after the body timeout once its answers
    no longer leave, instead of holding the connection for ever."""
    server.settled()
    before = server.rss_mb()
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = b"GET / HTTP/1.1\r\nHost: autoconfig.example.edu\r\n\r\n"  # the setup page
        start = time.monotonic()
        sent = _stream_requests(sock, request, start + 15)
        took = time.monotonic() - start
    grown = server.rss_mb() - before
    print(f"\npipelining client that reads nothing: reset after {took:.1f} s, {sent >> 20} MiB")
    assert took < 15, "the server never gave up on a client that reads nothing"
    assert grown < RSS_GROWTH_MB


def _stream_requests(sock: socket.socket, request: bytes, deadline: float) -> int:
    """Pipeline ``request`` without reading until the server resets or ``deadline``."""
    burst = memoryview(request * 64)
    sent = at = 0
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            done = sock.send(burst[at:])
        except TimeoutError:
            continue  # both buffers full: wait for the server to act
        except OSError:
            return sent
        sent += done
        at = (at + done) % len(burst)
    return sent


def test_pipelined_requests_are_all_answered_in_order(server: Server) -> None:
    """A client may pipeline (a 190 KiB burst of GETs and POSTs, sent in one go while it
    reads): every request is answered, in order, however the reads split them."""
    pox = (
        b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
        b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>user@example.edu'
        b"</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/"
        b"autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
        b"</Autodiscover>"
    )
    get = b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\n\r\n"
    post = (
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.example.edu\r\n"
        b"Content-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(pox) + pox
    )
    requests = [get if i % 5 else post for i in range(1000)]
    with server.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(requests),), daemon=True)
        sender.start()
        reader = Answers(sock)
        answers = [reader.next() for _ in requests]
        sender.join(10)
    for request, answer in zip(requests, answers, strict=True):
        assert _status(answer) == 200
        assert (b"<LoginName>" in answer) == request.startswith(b"POST"), answer[:300]


# -- connections ---------------------------------------------------------------------------


def test_connections_beyond_the_cap_are_answered_503(server: Server) -> None:
    server.settled()
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = server.connect()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\n\r\n")
            assert _status(_response(sock)) == 200  # admitted and kept open
            held.append(sock)
        with server.connect() as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: autoconfig.example.edu\r\n\r\n")
            answer, took = _until_closed(extra)
        assert _status(answer) == 503
        assert took < 1.0
        held.pop().close()
        wait_until(lambda: _status(_get(server)) == 200, 5, what="a connection admitted again")
    finally:
        for sock in held:
            sock.close()


# -- accounting of pipelined heads (pure) ----------------------------------------------------

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"


_line = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(
        st.sampled_from([REQUEST, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"]),
        min_size=1,
        max_size=5,
    ),
    lines=st.lists(_line.filter(bool), max_size=6),
    cut=st.integers(min_value=0, max_value=400),
)
def test_pipelined_head_bytes_never_undercount_the_unfinished_head(
    before: list[bytes], lines: list[bytes], cut: int
) -> None:
    """After requests that ended inside one read, the bytes charged to the next (unfinished)
    head are at least the ones it really has there, and none when the read ends with a
    head."""
    partial = b"\r\n".join(lines)[:cut]  # the start of a head: no blank line in it
    piece = b"".join(before) + partial
    charged = pipelined_head_bytes(piece)
    assert len(partial) <= charged <= len(piece)
    if piece.endswith(b"\r\n\r\n"):
        assert charged == 0
