"""Live reload of the site file on SIGHUP (``systemctl reload mailwarden``).

The end-to-end tests run the real ``mailwarden serve`` (uvicorn, one worker and two) with
clients hammering it: keep-alive clients (the hard case for a reload, since a server that
restarts workers closes their idle connections under them) and clients that open a connection
per request, asking for Thunderbird autoconfig, Outlook POX Autodiscover and Autodiscover
JSON. Every single request must succeed through the reload, and the answers must move from
the old IMAP host name to the new one, or, for a broken file, never move.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mailwarden.errors import ConfigError
from mailwarden.server.live import LiveApp
from mailwarden.server.metrics import Metrics
from mailwarden.server.reload import WATCH_INTERVAL, publish, validate
from tests.fixtures.guard_server import PolicyClient, running_guard, write_site
from tests.fixtures.server import running_server, server_log, server_pid
from tests.fixtures.wait import wait_until

OLD_HOST = "imap.example.edu"
NEW_HOST = "imap-reloaded.example.edu"
USER = "user@example.edu"
POX = (
    '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
    f"{USER}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/"
    "autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
    "</Autodiscover>"
)
IMAP_HOST = re.compile(rb"<(?:hostname|Server)>(imap[^<]*)</")


def _set_first_imap_host(site: Path, host: str) -> None:
    """Point the campus set's first IMAP server (implicit TLS) at ``host``."""
    text = site.read_text(encoding="utf-8")
    current = re.search(r'(\[\[services\.campus\.imap\]\]\nhost = )"([^"]*)"', text)
    assert current is not None
    site.write_text(
        text[: current.start(2)] + host + text[current.end(2) :],
        encoding="utf-8",
    )


def _imap_line(site: Path) -> int:
    """The line of the campus set's first ``host =`` (what a broken value is reported at)."""
    lines = site.read_text(encoding="utf-8").splitlines()
    start = lines.index("[[services.campus.imap]]")
    return start + 2


# -- the load ------------------------------------------------------------------------------


@dataclass
class Answer:
    started: float
    kind: str
    host: str | None


@dataclass
class Load:
    """Clients asking the server in a loop until stopped; every answer and failure kept."""

    base: str
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, client: httpx.Client, kind: str) -> None:
        started = time.monotonic()
        try:
            if kind == "autoconfig":
                r = client.get("/mail/config-v1.1.xml", params={"emailaddress": USER})
            elif kind == "pox":
                r = client.post(
                    "/autodiscover/autodiscover.xml",
                    content=POX,
                    headers={"content-type": "text/xml"},
                )
            else:
                r = client.get(
                    "/autodiscover/autodiscover.json",
                    params={"Email": USER, "Protocol": "AutodiscoverV1"},
                )
        except httpx.HTTPError as exc:
            with self.lock:
                self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
            return
        found = IMAP_HOST.search(r.content)
        host = found.group(1).decode() if found else None
        ok = r.status_code == 200 and (kind == "json" or host is not None)
        with self.lock:
            if not ok:
                self.failures.append(f"{kind}: HTTP {r.status_code} {r.content[:200]!r}")
            else:
                self.answers.append(Answer(started, kind, host))

    def client_loop(self, keep_alive: bool) -> None:
        kinds = ("autoconfig", "pox", "json")
        i = 0
        if keep_alive:
            with httpx.Client(base_url=self.base, timeout=10) as client:
                while not self.stop.is_set():
                    self.ask(client, kinds[i % 3])
                    i += 1
        else:
            while not self.stop.is_set():
                with httpx.Client(base_url=self.base, timeout=10) as client:
                    self.ask(client, kinds[i % 3])
                i += 1

    def hosts_since(self, moment: float) -> set[str]:
        with self.lock:
            return {a.host for a in self.answers if a.started >= moment and a.host}

    def count(self) -> int:
        with self.lock:
            return len(self.answers) + len(self.failures)


@contextmanager
def load_on(base: str, keep_alive: int = 4, fresh: int = 2) -> Iterator[Load]:
    load = Load(base)
    threads = [
        threading.Thread(target=load.client_loop, args=(True,), daemon=True)
        for _ in range(keep_alive)
    ] + [
        threading.Thread(target=load.client_loop, args=(False,), daemon=True) for _ in range(fresh)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: load.count() >= 200, 30)  # the load is up before anything happens
        yield load
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=20)


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_valid_file_takes_effect_with_no_failed_request(
    example_site_file: Path, workers: int
) -> None:
    with running_server(example_site_file, workers=workers) as base, load_on(base) as load:
        assert load.hosts_since(0) == {OLD_HOST}
        _set_first_imap_host(example_site_file, NEW_HOST)
        before = load.count()
        hup = time.monotonic()
        os.kill(server_pid(base), signal.SIGHUP)
        # each worker swaps within WATCH_INTERVAL; then nothing old may be answered
        wait_until(lambda: NEW_HOST in load.hosts_since(hup), 10)
        settled = time.monotonic() + 2 * WATCH_INTERVAL + 0.5
        wait_until(lambda: time.monotonic() > settled + 1.0, 5)
        during = load.count() - before
    assert load.failures == [], load.failures[:10]
    assert during > 100, f"only {during} requests ran through the reload"
    assert load.hosts_since(settled) == {NEW_HOST}
    kinds = {a.kind for a in load.answers if a.started >= settled and a.host == NEW_HOST}
    assert kinds == {"autoconfig", "pox"}  # both documents that name the IMAP host moved


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_file_is_refused_logged_and_the_old_one_serves(
    example_site_file: Path, workers: int
) -> None:
    line = _imap_line(example_site_file)
    good = example_site_file.read_text(encoding="utf-8")
    with running_server(example_site_file, workers=workers) as base:
        with load_on(base) as load:
            example_site_file.write_text(
                good.replace(f'host = "{OLD_HOST}"', "host = 7", 1), encoding="utf-8"
            )
            hup = time.monotonic()
            os.kill(server_pid(base), signal.SIGHUP)
            log = server_log(base)
            wait_until(lambda: "reload refused" in log.read_text(errors="replace"), 10)
            wait_until(lambda: time.monotonic() > hup + 3 * WATCH_INTERVAL + 0.5, 5)
            assert load.hosts_since(hup) == {OLD_HOST}
        assert load.failures == [], load.failures[:10]
        text = log.read_text(errors="replace")
        assert (
            f"reload refused, still serving the previous configuration: "
            f"{example_site_file}:{line}: services.campus.imap.0.host" in text
        ), text
        assert "Traceback" not in text
        # the refusal left reload working: the next valid file takes effect
        example_site_file.write_text(
            good.replace(f'host = "{OLD_HOST}"', f'host = "{NEW_HOST}"', 1), encoding="utf-8"
        )
        os.kill(server_pid(base), signal.SIGHUP)
        with httpx.Client(base_url=base, timeout=10) as client:

            def moved() -> bool:
                r = client.get("/mail/config-v1.1.xml", params={"emailaddress": USER})
                return NEW_HOST.encode() in r.content

            wait_until(moved, 10)


def _children(pid: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in path.read_text().split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if b"spawn_main" in argv:
            found.append(int(child))
    return found


@pytest.mark.slow
def test_a_replaced_worker_loads_the_last_valid_file_not_the_edit(
    example_site_file: Path,
) -> None:
    """uvicorn starts a new worker when one dies; it must not read a broken edit from disk
    (which would stop the server: a worker failing start-up stops the supervisor)."""
    good = example_site_file.read_text(encoding="utf-8")
    with running_server(example_site_file, workers=2) as base:
        _set_first_imap_host(example_site_file, NEW_HOST)
        os.kill(server_pid(base), signal.SIGHUP)
        with httpx.Client(base_url=base, timeout=10) as client:

            def answer() -> bytes:
                r = client.get("/mail/config-v1.1.xml", params={"emailaddress": USER})
                assert r.status_code == 200
                return r.content

            wait_until(lambda: all(NEW_HOST.encode() in answer() for _ in range(20)), 10)
            example_site_file.write_text(good.replace("[organisation]", "[organisation"))
            workers = _children(server_pid(base))
            assert len(workers) == 2
            os.kill(workers[0], signal.SIGKILL)
            wait_until(lambda: len(set(_children(server_pid(base))) - set(workers)) == 1, 20)
            client.close()
        with httpx.Client(base_url=base, timeout=10) as fresh:
            for _ in range(40):  # both workers, the replacement among them
                r = fresh.get("/mail/config-v1.1.xml", params={"emailaddress": USER})
                assert r.status_code == 200
                assert NEW_HOST.encode() in r.content


# -- in process ----------------------------------------------------------------------------


def test_validate_reports_file_and_line(example_site_file: Path) -> None:
    line = _imap_line(example_site_file)
    text = example_site_file.read_text(encoding="utf-8")
    example_site_file.write_text(text.replace(f'host = "{OLD_HOST}"', "host = 7", 1))
    with pytest.raises(ConfigError) as caught:
        validate(example_site_file)
    assert caught.value.message.startswith(f"{example_site_file}:{line}: ")


def test_publish_refuses_a_broken_file_and_keeps_the_snapshot(
    example_site_file: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot.toml"
    publish(example_site_file, snapshot)
    published = snapshot.read_bytes()
    inode = snapshot.stat().st_ino
    publish(example_site_file, snapshot)  # unchanged text: published again (new key files?)
    assert snapshot.stat().st_ino != inode
    example_site_file.write_text("[organisation\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        publish(example_site_file, snapshot)
    assert snapshot.read_bytes() == published
    assert not (tmp_path / "snapshot.toml.new").exists()


async def _get(app: LiveApp, path: str = "/mail/config-v1.1.xml") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, params={"emailaddress": USER})


def test_swap_keeps_requests_on_their_app_and_the_unchanged_directory(
    example_site_file: Path, tmp_path: Path
) -> None:
    asyncio.run(_swap_scenario(example_site_file, tmp_path))


async def _swap_scenario(example_site_file: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.toml"
    publish(example_site_file, snapshot)
    app = LiveApp(example_site_file, snapshot, Metrics(CollectorRegistry()))
    first = app.current
    assert OLD_HOST.encode() in (await _get(app)).content
    assert app.check() is False  # nothing published: nothing rebuilt
    first.in_flight += 1  # a request still running on the first application
    _set_first_imap_host(example_site_file, NEW_HOST)
    publish(example_site_file, snapshot)
    assert app.check() is True
    assert app.current is not first
    assert app.current.directory is first.directory  # [directory] unchanged: kept, warm
    assert NEW_HOST.encode() in (await _get(app)).content
    assert first.in_flight == 1
    assert app.current.in_flight == 0
    first.in_flight -= 1
    for task in list(app._tasks):  # the retirement: it must not close the shared directory
        await task
    assert (await _get(app)).status_code == 200
    await app.current.directory.close()


# -- the guard -----------------------------------------------------------------------------

GUARD = """[guard]
store = "memory"

[guard.classes.watched]
rcpts_per_minute = 100
rcpts_per_hour = 3
rcpts_per_day = 1000
anomaly = false
"""
WATCHED = '\n[guard.members]\nwatched = ["zz0010"]\n'


@dataclass
class Decisions:
    """Policy clients asking for decisions in a loop (one persistent connection each, as
    Postfix's smtpd processes keep); every answer and failure kept."""

    port: int
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client_loop(self, prefix: str) -> None:
        """A new account for every request: each sends one message, which is fine."""
        client = PolicyClient(("127.0.0.1", self.port))
        i = 0
        try:
            while not self.stop.is_set():
                user = f"{prefix}x{i}"
                i += 1
                try:
                    action = client.rcpt(user, "colleague@example.edu")
                except (OSError, AssertionError) as exc:
                    with self.lock:
                        self.failures.append(f"{user}: {type(exc).__name__}: {exc}")
                    return
                with self.lock:
                    self.answers.append(action)
        finally:
            client.close()


@contextmanager
def decisions_on(port: int, clients: int = 4) -> Iterator[Decisions]:
    load = Decisions(port)
    threads = [
        threading.Thread(target=load.client_loop, args=(f"zz01{i:02d}",), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(load.answers) >= 200, 30)
        yield load
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=20)


def _external(client: PolicyClient, user: str, n: int, start: int = 0) -> list[str]:
    return [client.rcpt(user, f"someone@ext{start + i}.example.org") for i in range(n)]


@pytest.mark.slow
def test_guard_reload_applies_new_classes_with_decisions_flowing(tmp_path: Path) -> None:
    site = write_site(tmp_path, GUARD)
    with running_guard(site) as guard, decisions_on(guard.policy_port) as load:
        probe = PolicyClient(("127.0.0.1", guard.policy_port))
        try:
            assert _external(probe, "zz0010", 4) == ["DUNNO"] * 4  # default class: fine
            site.write_text(site.read_text(encoding="utf-8") + WATCHED, encoding="utf-8")
            before = len(load.answers)
            guard.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: '"event": "reloaded"' in guard.log_text(), 10)
            after = _external(probe, "zz0010", 2, start=4)  # now watched: 3 an hour
        finally:
            probe.close()
        wait_until(lambda: len(load.answers) > before + 100, 10)
    assert load.failures == [], load.failures[:10]
    assert set(load.answers) == {"DUNNO"}
    assert all(action != "DUNNO" for action in after), after


@pytest.mark.slow
def test_guard_refuses_a_broken_file_and_keeps_deciding(tmp_path: Path) -> None:
    site = write_site(tmp_path, GUARD)
    good = site.read_text(encoding="utf-8")
    broken = good.replace("rcpts_per_hour = 3", "rcpts_per_hour = -3") + WATCHED
    line = broken.splitlines().index("rcpts_per_hour = -3") + 1
    with running_guard(site) as guard, decisions_on(guard.policy_port) as load:
        site.write_text(broken, encoding="utf-8")
        guard.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: '"event": "reload-refused"' in guard.log_text(), 10)
        before = len(load.answers)
        wait_until(lambda: len(load.answers) > before + 100, 10)
        probe = PolicyClient(("127.0.0.1", guard.policy_port))
        try:  # the old configuration: zz0010 is not watched
            assert _external(probe, "zz0010", 5) == ["DUNNO"] * 5
        finally:
            probe.close()
    assert load.failures == [], load.failures[:10]
    assert set(load.answers) == {"DUNNO"}
    text = guard.log_text()
    assert f"{site}:{line}: guard.classes.watched.rcpts_per_hour" in text, text


def test_swap_keeps_the_rate_limiter_unless_its_settings_change(
    example_site_file: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot.toml"
    publish(example_site_file, snapshot)
    app = LiveApp(example_site_file, snapshot, Metrics(CollectorRegistry()))

    async def scenario() -> None:
        buckets = app.current.resolver.lookup_buckets
        _set_first_imap_host(example_site_file, NEW_HOST)
        publish(example_site_file, snapshot)
        assert app.check() is True
        assert app.current.resolver.lookup_buckets is buckets
        text = example_site_file.read_text(encoding="utf-8")
        example_site_file.write_text(text.replace("[server]\n", "[server]\nlookup_burst = 7\n"))
        publish(example_site_file, snapshot)
        assert app.check() is True
        assert app.current.resolver.lookup_buckets is not buckets
        for task in list(app._tasks):
            await task
        await app.current.directory.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["mailwarden.service", "mailwarden-guard.service"])
def test_units_reload_with_sighup(name: str) -> None:
    """``systemctl reload`` sends what the tests above send (systemd-analyze verify of the
    units, with this line: tests/test_systemd_units.py)."""
    unit = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / name
    lines = [line.strip() for line in unit.read_text(encoding="utf-8").splitlines()]
    assert [line for line in lines if line.startswith("ExecReload=")] == [
        "ExecReload=/bin/kill -HUP $MAINPID"
    ]
