"""Hostile clients against the real ``mailwarden guard serve`` (policy and milter, TCP and
unix sockets): idle and half-sent connections are closed after ``*_idle_timeout``, a listener
holds at most ``max_connections``, a client that pipelines requests and never reads its
answers is no longer read from (the guard's memory stays bounded and other clients are
answered meanwhile), and CRLF-framed policy requests are answered.

Every case is bounded in time: sockets have timeouts, floods have a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Detector
from mailwarden.guard.engine import Engine
from mailwarden.guard.listen import BATCH, FrameError
from mailwarden.guard.policy import MAX_REQUEST, PolicyConnection, PolicyServer
from mailwarden.guard.store.memory import MemoryStore
from tests.fixtures.guard_server import GuardProcess, PolicyClient, running_guard, write_site
from tests.fixtures.redis_server import running_redis

pytestmark = pytest.mark.slow  # starts the guard (and redis)

GUARD = """
[guard]
{store}
local_domains = ["example.com"]
policy_idle_timeout = {idle}
milter_idle_timeout = {idle}
max_connections = {cap}
"""

Address = tuple[str, int] | str

RSS_GROWTH_MB = 10.0
"""What a flood may add to the guard's resident memory (today's code: over 100 MB)."""
RSS_AFTER_MB = 6.0
"""What may stay added once the flooding socket is closed."""
PROBE_MAX_S = 0.5
"""The longest another client may wait for an answer during a flood (today's: 1.4-1.9 s)."""
FLOOD_BYTES = 40 << 20


@dataclass
class Guard:
    process: GuardProcess
    policy: Address
    milter: Address

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def rss_mb(self) -> float:
        """VmRSS of the guard process, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@contextmanager
def guard(
    tmp: Path,
    *,
    idle: float = 600.0,
    cap: int = 2000,
    unix: bool = False,
    store: str = "",
) -> Iterator[Guard]:
    """The real guard (SQLite unless ``store`` says otherwise), policy and milter on TCP or
    both on unix sockets."""
    store = store or f'store = "sqlite"\nstate_path = "{tmp / "guard.sqlite"}"'
    site = write_site(tmp, GUARD.format(store=store, idle=idle, cap=cap))
    if unix:
        policy_path, milter_path = tmp / "policy.sock", tmp / "milter.sock"
        extra = ("--milter", f"unix:{milter_path}")
        with running_guard(site, unix=policy_path, extra=extra) as g:
            _wait_connectable(str(milter_path))
            yield Guard(g, str(policy_path), str(milter_path))
    else:
        with running_guard(site, milter=True) as g:
            yield Guard(g, ("127.0.0.1", g.policy_port), ("127.0.0.1", g.milter_port))


def _wait_connectable(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connect(path, timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{path}: not listening after {timeout} s")


def connect(address: Address, timeout: float = 5.0) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the guard closed ``sock`` (EOF or reset), None if still open."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(65536):
                return time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - start
    except TimeoutError:
        return None


def milter_packet(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + code + data


OPTNEG = milter_packet(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF))


def read_milter(sock: socket.socket) -> tuple[bytes, bytes]:
    head = _exactly(sock, 4)
    (size,) = struct.unpack("!I", head)
    body = _exactly(sock, size)
    return body[:1], body[1:]


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def ask_policy(client: PolicyClient) -> str:
    return client.ask(request="smtpd_access_policy", protocol_state="RCPT", recipient="a@b.c")


# -- idle timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_idle_half_sent_and_truncated_connections_are_closed(tmp_path: Path, unix: bool) -> None:
    idle = 1.5
    with guard(tmp_path, idle=idle, unix=unix) as g:
        idle_policy = connect(g.policy)
        half_sent = connect(g.policy)
        half_sent.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_user")
        answered_then_idle = PolicyClient(g.policy)
        assert ask_policy(answered_then_idle) == "DUNNO"
        idle_milter = connect(g.milter)
        truncated = connect(g.milter)
        truncated.sendall(OPTNEG)
        assert read_milter(truncated)[0] == b"O"
        truncated.sendall(struct.pack("!I", 200) + b"M<someone@example.edu>")  # 200 announced
        dripping = connect(g.policy)
        # a client that stays busy with complete requests is not idle
        busy = PolicyClient(g.policy)
        started = time.monotonic()
        while time.monotonic() - started < idle * 2:
            assert ask_policy(busy) == "DUNNO"
            with contextlib.suppress(OSError):  # closed already
                dripping.sendall(b"x")  # bytes, but never a whole request: no progress
            time.sleep(0.25)
        sockets = {
            "idle policy": idle_policy,
            "half-sent policy request": half_sent,
            "idle after an answer": answered_then_idle.sock,
            "idle milter": idle_milter,
            "truncated milter packet": truncated,
            "dripping policy request": dripping,
        }
        for what, sock in sockets.items():
            took = closed_within(sock, idle + 2.0)
            assert took is not None, f"{what}: still open {idle * 2 + idle + 2:.1f} s later"
        assert ask_policy(busy) == "DUNNO"  # the busy one was left alone
        busy.close()
        assert "policy-idle-timeout" in g.process.log_text()
        assert "milter-idle-timeout" in g.process.log_text()


# -- connection cap -------------------------------------------------------------------------


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path, unix: bool) -> None:
    cap = 4
    with guard(tmp_path, cap=cap, unix=unix) as g:
        clients = [PolicyClient(g.policy) for _ in range(cap)]
        for client in clients:
            assert ask_policy(client) == "DUNNO"
        extra = connect(g.policy)
        took = closed_within(extra, 3.0)
        assert took is not None, "a connection beyond the cap was kept"
        assert took < 1.0
        # the milter listener has a cap of its own
        milters = [connect(g.milter) for _ in range(cap)]
        for sock in milters:
            sock.sendall(OPTNEG)
            assert read_milter(sock)[0] == b"O"
        extra_milter = connect(g.milter)
        assert closed_within(extra_milter, 3.0) is not None
        # those inside the cap still work, and a freed place is taken again
        assert ask_policy(clients[0]) == "DUNNO"
        clients.pop().close()
        deadline = time.monotonic() + 3.0
        while True:
            again = PolicyClient(g.policy)
            try:
                assert ask_policy(again) == "DUNNO"
                break
            except (AssertionError, ConnectionError, OSError):
                again.close()
                assert time.monotonic() < deadline, "the freed place was not taken again"
                time.sleep(0.1)
        assert "policy-connection-refused" in g.process.log_text()
        for client in [*clients, again]:
            client.close()
        for sock in milters:
            sock.close()


# -- CRLF framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_crlf_framed_policy_requests_are_answered(tmp_path: Path, unix: bool) -> None:
    with guard(tmp_path, unix=unix) as g:
        sock = connect(g.policy)
        reader = sock.makefile("rb")
        request = b"request=smtpd_access_policy\r\nprotocol_state=RCPT\r\nrecipient=a@b.c\r\n\r\n"
        sock.sendall(request * 2)
        for _ in range(2):
            assert reader.readline() == b"action=DUNNO\n"
            assert reader.readline() == b"\n"
        # a CR at the end of one segment and its LF at the start of the next
        if not unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cut = request.index(b"\r\n\r\n") + 3
        for piece in (request[: cut - 2], request[cut - 2 : cut], request[cut:]):
            sock.sendall(piece)
            time.sleep(0.1)
        assert reader.readline() == b"action=DUNNO\n"
        assert reader.readline() == b"\n"
        # LF requests on the same connection still work, and an authenticated one is decided
        client = PolicyClient(g.policy)
        assert client.rcpt("zz0002", "friend@example.org") == "DUNNO"
        client.close()
        reader.close()
        sock.close()


# -- backpressure -----------------------------------------------------------------------------


class Flood(threading.Thread):
    """Send ``total`` bytes of ``unit`` pipelined, never reading; stop when the guard stops
    reading (no progress for ``stall`` seconds), at the deadline, or when closed."""

    def __init__(self, sock: socket.socket, unit: bytes, total: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.deadline = sock, deadline
        self.chunk = unit * (65536 // len(unit))  # whole requests, so total is one too
        self.total = total
        self.sent = 0
        self.stalled = False
        self.stall = 2.0

    def run(self) -> None:
        self.sock.settimeout(self.stall)
        try:
            while self.sent < self.total and time.monotonic() < self.deadline:
                at = self.sent % len(self.chunk)  # a partial send continues mid-chunk
                self.sent += self.sock.send(self.chunk[at : at + self.total - self.sent])
        except TimeoutError:
            self.stalled = True
        except OSError:
            pass


def probe_policy(address: Address) -> float:
    client = PolicyClient(address)
    try:
        start = time.monotonic()
        assert ask_policy(client) == "DUNNO"
        return time.monotonic() - start
    finally:
        client.close()


def probe_milter(address: Address) -> float:
    sock = connect(address)
    try:
        start = time.monotonic()
        sock.sendall(OPTNEG)
        assert read_milter(sock)[0] == b"O"
        return time.monotonic() - start
    finally:
        sock.close()


def flood_and_watch(
    g: Guard, target: Address, unit: bytes, probe: Address, *, milter: bool
) -> None:
    """Flood ``target`` from a client that never reads; meanwhile sample the guard's RSS and
    time another client's answer; then close the flood and check the memory comes back."""
    for _ in range(20):  # warm up: the first answers load code and caches
        probe_milter(probe) if milter else probe_policy(probe)
    base = g.rss_mb()
    hostile = connect(target)
    flood = Flood(hostile, unit, FLOOD_BYTES, time.monotonic() + 25.0)
    flood.start()
    peak, latencies = base, []
    try:
        while flood.is_alive():
            peak = max(peak, g.rss_mb())
            assert peak - base < RSS_GROWTH_MB, f"RSS {base:.0f} → {peak:.0f} MB during the flood"
            latencies.append(probe_milter(probe) if milter else probe_policy(probe))
            assert latencies[-1] < PROBE_MAX_S, f"another client waited {latencies[-1]:.2f} s"
            time.sleep(0.05)
        assert flood.stalled, f"the guard read all {flood.sent >> 20} MiB from a non-reader"
        for _ in range(10):  # while the flooding client sits there, not reading
            latencies.append(probe_milter(probe) if milter else probe_policy(probe))
            peak = max(peak, g.rss_mb())
    finally:
        hostile.close()
        flood.join(5.0)
    assert max(latencies) < PROBE_MAX_S
    assert peak - base < RSS_GROWTH_MB
    deadline = time.monotonic() + 5.0
    while (after := g.rss_mb()) - base >= RSS_AFTER_MB:
        assert time.monotonic() < deadline, f"RSS {base:.0f} → {after:.0f} MB after the close"
        time.sleep(0.1)
    print(
        f"flood of {flood.sent / 2**20:.1f} MiB taken before the guard stopped reading; RSS "
        f"{base:.1f} MB → peak {peak:.1f} MB → {after:.1f} MB after the close; other client: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} "
        f"ms over {len(latencies)} probes"
    )


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_pipelined_policy_requests_from_a_client_that_never_reads(
    tmp_path: Path, unix: bool
) -> None:
    with guard(tmp_path, unix=unix) as g:
        flood_and_watch(g, g.policy, b"a=b\n\n", g.policy, milter=False)


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_milter_optneg_flood_from_a_client_that_never_reads(tmp_path: Path, unix: bool) -> None:
    with guard(tmp_path, unix=unix) as g:
        flood_and_watch(g, g.milter, OPTNEG, g.milter, milter=True)


def test_pipelined_authenticated_requests_with_redis_never_read(tmp_path: Path) -> None:
    """With Redis the answers come from a task that waits for the store: it too stops when
    the client does not read, and the others are answered meanwhile."""
    unit = (
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=zz0003\n"
        b"recipient=someone@example.org\ninstance=i1\n\n"
    )
    with running_redis(tmp_path / "redis") as redis:
        store = f'store = "redis"\nredis_url = "{redis.url}"\nredis_timeout = 1.0'
        with guard(tmp_path, store=store) as g:
            flood_and_watch(g, g.policy, unit, g.policy, milter=False)


def test_a_slow_reader_still_gets_every_answer_in_order(tmp_path: Path) -> None:
    """Pausing and resuming loses nothing: 400,000 pipelined requests, read late and slowly,
    get 400,000 answers."""
    count = 400_000
    with guard(tmp_path) as g:
        sock = connect(g.policy, timeout=20.0)
        flood = Flood(sock, b"a=b\n\n", count * 5, time.monotonic() + 60.0)
        flood.stall = 30.0
        flood.start()
        time.sleep(1.0)  # the guard stops reading from us meanwhile
        answer = b"action=DUNNO\n\n"
        received = bytearray()
        deadline = time.monotonic() + 60.0
        while len(received) < count * len(answer):
            assert time.monotonic() < deadline, f"{len(received) // len(answer)} answers"
            chunk = sock.recv(1 << 16)
            assert chunk, "closed early"
            received += chunk
            time.sleep(0.001)
        flood.join(10.0)
        assert flood.sent == count * 5
        assert bytes(received) == answer * count
        sock.close()


# -- framing, as a property -------------------------------------------------------------------

_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
_VALUES = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=30
)


def _connection() -> PolicyConnection:
    config = GuardConfig()
    engine = Engine(config, MemoryStore(), Detector(config, frozenset({"example.com"})))
    return PolicyConnection(PolicyServer(engine))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=5), max_size=8),
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_framing_is_the_same_with_lf_or_crlf_whatever_the_reads(
    requests: list[dict[str, str]], crlf: list[bool], cuts: list[int]
) -> None:
    """LF and CRLF line ends, mixed per request, cut into reads anywhere (a CR and its LF in
    different reads included): the same requests come out, in order."""
    stream = b""
    for i, request in enumerate(requests):
        end = "\r\n" if crlf[i % len(crlf)] else "\n"
        stream += "".join(f"{k}={v}{end}" for k, v in request.items()).encode() + end.encode()
    conn = _connection()
    got: list[dict[str, str]] = []
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        data = conn.frame(stream[start:cut])  # may drop a CR from buf: before the +=
        conn.buf += data
        start = max(start, cut)
        while batch := conn.take(BATCH):
            got.extend(batch)
    assert got == requests


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_any_bytes_give_requests_or_a_frame_error(reads: list[bytes]) -> None:
    conn = _connection()
    with contextlib.suppress(FrameError):
        for read in reads:
            data = conn.frame(read)  # before the +=, as data_received does
            conn.buf += data
            while conn.take(BATCH):
                pass
        assert len(conn.buf) <= MAX_REQUEST
