"""Run the real ``mailwarden console`` for a test, and a client that keeps its cookies.

The console's cookies are ``Secure``; an HTTP client's cookie jar rightly keeps those from a
plain-HTTP test server, so :class:`ConsoleClient` carries them itself, as a browser on
``localhost`` does.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.fixtures.guard_server import write_site
from tests.fixtures.net import free_port, wait_for_port

SQLITE_GUARD = """
[guard]
store = "sqlite"
state_path = "guard-state.sqlite"
local_domains = ["example.edu"]
"""


def console_site(folder: Path, console_toml: str, guard_toml: str = SQLITE_GUARD) -> Path:
    """examples/site.toml with the embedded directory in ``folder``, a guard and a console."""
    site = write_site(folder, guard_toml)
    with site.open("a", encoding="utf-8") as f:
        f.write("\n" + console_toml)
    return site


def cli(site: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwarden", "console", "--config", str(site), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def add_user(site: Path, name: str, role: str, password: str) -> None:
    done = cli(site, "user", "add", name, "--role", role, "--password-stdin", stdin=password + "\n")
    assert done.returncode == 0, done.stderr


@dataclass
class Console:
    url: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_console(site: Path, host: str = "127.0.0.1") -> Iterator[Console]:
    port = free_port()
    log = site.parent / f"console-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailwarden",
                "console",
                "--config",
                str(site),
                "--listen",
                f"{host}:{port}",
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    running = Console(f"http://{host}:{port}", port, log, proc)
    try:
        wait_for_port(port, alive=lambda: proc.poll() is None)
        yield running
    except BaseException:
        sys.stderr.write(running.log_text())
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class ConsoleClient:
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base, follow_redirects=False, timeout=30)

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for raw in response.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in raw:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def _cookie(self) -> dict[str, str]:
        jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**self.headers, **({"cookie": jar} if jar else {})}

    def get(self, path: str) -> httpx.Response:
        return self._keep(self.http.get(path, headers=self._cookie()))

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self._keep(self.http.post(path, data=data, headers=self._cookie()))

    def login(self, name: str, password: str) -> httpx.Response:
        page = self.get("/login")
        token = csrf_of(page.text)
        return self.post("/login", {"csrf": token, "login": name, "password": password})

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.get(path).text)


def csrf_of(text: str) -> str:
    found = CSRF_RE.search(text)
    assert found, text[:2000]
    return html.unescape(found.group(1))
