"""The systemd units in packaging/systemd: valid for systemd, hardened, and running real commands.

``systemd-analyze verify`` and ``systemd-analyze security --offline`` work on unit files without
systemd as PID 1, so they run here as they would on the target host. The units name
``/opt/mailwarden/.venv/bin/mailwarden``; verify wants the program to exist, so each unit is
rendered with this checkout's ``mailwarden`` into a temporary folder first.

``MemoryDenyWriteExecute=yes`` is a seccomp filter that systemd installs before it runs the
command. The tests install the same filter (the rules of systemd 252's
``seccomp_memory_deny_write_execute``) in front of the real server, guard and console and use
them, and
show that the audit cannot run under it: that is why its unit leaves the setting out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mailwarden.cli import build_parser
from tests.fixtures.guard_server import PolicyClient, write_site
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.paths import EXAMPLES

UNITS = EXAMPLES.parent / "packaging" / "systemd"
INSTALLED = "/opt/mailwarden/.venv/bin/mailwarden"
SERVICES = (
    "mailwarden.service",
    "mailwarden-guard.service",
    "mailwarden-audit.service",
    "mailwarden-console.service",
)
LONG_RUNNING = ("mailwarden.service", "mailwarden-guard.service", "mailwarden-console.service")
ALL_UNITS = (*SERVICES, "mailwarden-audit.timer")


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)", pytrace=False)
    return path


def _mailwarden() -> str:
    """This checkout's ``mailwarden`` program: the one next to the running interpreter."""
    path = Path(sys.executable).parent / "mailwarden"
    assert path.is_file(), f"{path} missing: install the package into the venv (make venv)"
    return str(path)


def _render(folder: Path, replace: dict[str, str] | None = None) -> Path:
    """Every unit, with this checkout's program, into ``folder`` (the timer finds its
    service there); ``replace`` changes text of the units (to break one on purpose)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ALL_UNITS:
        text = (UNITS / name).read_text(encoding="utf-8").replace(INSTALLED, _mailwarden())
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify``. Its exit status stays 0 for an unknown key or a value it
    cannot parse (it ignores the line, as systemd does at boot), so a unit passes only with
    nothing at all on its output."""
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=unit.parent,
    )


def _clean(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip()


def _settings(name: str) -> dict[str, list[str]]:
    """``Key`` → its values in order (a key may repeat, and an empty value resets it)."""
    found: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


# -- systemd accepts them -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_UNITS)
def test_systemd_analyze_verify_passes(name: str, tmp_path: Path) -> None:
    result = _verify(_render(tmp_path) / name)
    assert _clean(result), f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSystem=stricter", "protect system value"),
        ("NoNewPrivileges=yes", "NoNewPrivilege=yes", "Unknown key"),
        ("ExecStart=" + INSTALLED, "ExecStart=/opt/nowhere/mailwarden", "not executable"),
    ],
)
def test_verify_catches_a_broken_unit(old: str, new: str, complaint: str, tmp_path: Path) -> None:
    """The check above can fail: a misspelt value, a misspelt key, a missing program."""
    units = _render(tmp_path, {old.replace(INSTALLED, _mailwarden()): new})
    result = _verify(units / "mailwarden.service")
    assert not _clean(result)
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_exposure_level_is_ok(name: str, tmp_path: Path) -> None:
    """``systemd-analyze security``: 1.4 today (0 best, 10 worst); fail above 2.0."""
    unit = _render(tmp_path) / name
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


# -- hardened as documented -----------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_unprivileged_and_hardened(name: str) -> None:
    s = _settings(name)
    expected = {
        "User": "mailwarden",
        "Group": "mailwarden",
        "StateDirectory": "mailwarden",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert _one(s, key) == value, f"{name}: {key}"
    assert s["SystemCallFilter"][0] == "@system-service"
    assert "DynamicUser" not in s
    if name in LONG_RUNNING:
        assert _one(s, "Restart") == "on-failure"
        assert _one(s, "MemoryDenyWriteExecute") == "yes"
        assert "ReadWritePaths" not in s  # the StateDirectory is all they write
    else:  # the audit: see test_audit_cannot_run_without_writable_executable_memory
        assert "MemoryDenyWriteExecute" not in s
        assert _one(s, "Type") == "oneshot"
        assert s["ReadWritePaths"] == ["-/var/lib/prometheus/node-exporter"]


def test_timer_runs_the_audit_hourly() -> None:
    s = _settings("mailwarden-audit.timer")
    assert _one(s, "OnCalendar") == "hourly"
    assert _one(s, "Persistent") == "true"
    assert _one(s, "WantedBy") == "timers.target"
    assert "Unit" not in s  # mailwarden-audit.service, by name


def test_console_listens_on_loopback_only() -> None:
    """The console is for staff behind a TLS proxy: its unit must not listen on a public
    address, whatever [console] listen says (--listen wins)."""
    argv = shlex.split(_one(_settings("mailwarden-console.service"), "ExecStart"))
    assert argv[1] == "console"
    host = argv[argv.index("--listen") + 1].rsplit(":", 1)[0]
    assert host in ("127.0.0.1", "[::1]")
    from mailwarden.console.config import ConsoleConfig

    assert ConsoleConfig().listen.startswith("127.0.0.1:")  # and without --listen too


def test_audit_keeps_its_runs_where_the_console_reads_them() -> None:
    """--save-dir is inside the audit unit's StateDirectory, and the console's default
    [console] audit_dir is that folder: installed as packaged, the audit page just works."""
    argv = shlex.split(_one(_settings("mailwarden-audit.service"), "ExecStart"))
    folder = Path(argv[argv.index("--save-dir") + 1])
    state = Path("/var/lib") / _one(_settings("mailwarden-audit.service"), "StateDirectory")
    assert folder.parent == state
    from mailwarden.console.config import ConsoleConfig

    assert ConsoleConfig().audit_dir == folder


def test_sysusers_creates_the_units_user(tmp_path: Path) -> None:
    """``systemd-sysusers`` (into an empty root) makes the system user the units name."""
    (tmp_path / "etc").mkdir()
    tool = shutil.which("systemd-sysusers") or pytest.fail("systemd-sysusers missing (systemd)")
    result = subprocess.run(
        [tool, f"--root={tmp_path}", str(UNITS / "mailwarden.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text(encoding="utf-8")
    entry = next(line for line in passwd.splitlines() if line.startswith("mailwarden:"))
    uid, home, shell = entry.split(":")[2], entry.split(":")[5], entry.split(":")[6]
    assert int(uid) < 1000  # a system user
    assert (home, shell) == ("/var/lib/mailwarden", "/usr/sbin/nologin")
    assert all(_one(_settings(name), "User") == "mailwarden" for name in SERVICES)


def test_tmpfiles_lets_the_audit_write_the_metrics(tmp_path: Path) -> None:
    """The ACL line names the audit's textfile folder, and ``systemd-tmpfiles`` applies it
    (for a user this machine knows: the ACL is resolved by the host's user database)."""
    prom = shlex.split(_one(_settings("mailwarden-audit.service"), "ExecStart"))
    folder = Path(prom[prom.index("--prometheus") + 1]).parent
    text = (UNITS / "mailwarden.tmpfiles").read_text(encoding="utf-8")
    assert f"a+ {folder} - - - - u:mailwarden:rwx" in text
    conf = tmp_path / "mailwarden.conf"
    conf.write_text(text.replace("u:mailwarden:", "u:nobody:"), encoding="utf-8")
    root = tmp_path / "root"
    tool = shutil.which("systemd-tmpfiles") or pytest.fail("systemd-tmpfiles missing (systemd)")

    def apply() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, f"--root={root}", "--create", str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    root.mkdir()
    assert apply().returncode == 0  # no node_exporter yet: nothing to do, no error
    target = root / folder.relative_to("/")
    target.mkdir(parents=True)
    result = apply()
    assert result.returncode == 0, result.stderr
    assert "system.posix_acl_access" in os.listxattr(target)


# -- the commands are real ------------------------------------------------------------------


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of all its subcommands, recursively."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found |= _option_strings(child)
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_exec_start_is_a_valid_command_line(name: str) -> None:
    argv = shlex.split(_one(_settings(name), "ExecStart"))
    assert argv[0] == INSTALLED
    args = argv[1:]
    parser = build_parser(args)
    namespace = parser.parse_args(args)  # exits 2 on an unknown option or a bad value
    assert namespace.config == "/etc/mailwarden/site.toml"
    # parse_args also takes abbreviations (--work for --workers): ask for the full names
    known = _option_strings(parser)
    used = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    assert used <= known, f"{name}: not options of mailwarden: {sorted(used - known)}"


def test_exec_start_check_catches_an_unknown_option() -> None:
    args = ["serve", "--config", "/etc/mailwarden/site.toml", "--threads", "2"]
    with pytest.raises(SystemExit):
        build_parser(args).parse_args(args)


# -- MemoryDenyWriteExecute= ----------------------------------------------------------------

MDWE_LAUNCHER = textwrap.dedent(
    """
    # Install the seccomp filter of systemd's MemoryDenyWriteExecute=yes (x86-64), then exec
    # argv[1:]: mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC and
    # shmat with SHM_EXEC fail with EPERM.
    import ctypes, os, struct, sys
    rows = [
        ("ld", 4, None, None), ("jeq", 0xC000003E, None, "allow"),  # arch x86-64
        ("ld", 0, None, None),  # syscall number
        ("jeq", 9, "mmap", None), ("jeq", 10, "mprot", None),
        ("jeq", 329, "mprot", None), ("jeq", 30, "shmat", None),
        ("ret", 0x7FFF0000, None, None),
        ("mmap:ld", 32, None, None), ("and", 6, None, None), ("jeq", 6, "deny", "allow"),
        ("mprot:ld", 32, None, None), ("and", 4, None, None), ("jeq", 4, "deny", "allow"),
        ("shmat:ld", 32, None, None), ("and", 0x8000, None, None),
        ("jeq", 0x8000, "deny", "allow"),
        ("allow:ret", 0x7FFF0000, None, None),
        ("deny:ret", 0x00050001, None, None),  # SECCOMP_RET_ERRNO | EPERM
    ]
    labels = {r[0].split(":")[0]: i for i, r in enumerate(rows) if ":" in r[0]}
    codes = {"ld": 0x20, "jeq": 0x15, "and": 0x54, "ret": 0x06}
    def jump(label, i):
        return 0 if label is None else labels[label] - i - 1
    code = b"".join(
        struct.pack("HBBI", codes[op.split(":")[-1]], jump(jt, i), jump(jf, i), k)
        for i, (op, k, jt, jf) in enumerate(rows)
    )
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    prog = Prog(len(rows), code)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(prog), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")
    os.execv(sys.argv[1], sys.argv[1:])
    """
)

needs_x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the filter is written for x86-64 system calls"
)


def _under_mdwe(*argv: str) -> list[str]:
    return [sys.executable, "-c", MDWE_LAUNCHER, sys.executable, *argv]


@contextmanager
def _running(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, alive=lambda: proc.poll() is None)
        yield proc
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace"))
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@needs_x86_64
def test_the_filter_refuses_writable_executable_memory() -> None:
    probe = "import mmap; mmap.mmap(-1, 4096, prot=7)"  # PROT_READ|PROT_WRITE|PROT_EXEC
    refused = subprocess.run(_under_mdwe("-c", probe), capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert "Operation not permitted" in refused.stderr
    allowed = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    assert allowed.returncode == 0


@needs_x86_64
@pytest.mark.slow
def test_server_serves_under_memory_deny_write_execute(example_site_file: Path) -> None:
    """Two workers, autoconfig, Autodiscover, a signed Apple profile, the setup page, metrics."""
    from tests.fixtures.signing_ca import make_signing_pki

    pki = make_signing_pki(example_site_file.parent / "pki")
    with example_site_file.open("a", encoding="utf-8") as site:
        site.write(
            f'\n[profiles]\nsigning_certificate = "{pki.certificate}"\n'
            f'signing_key = "{pki.key}"\nsigning_chain = "{pki.intermediate}"\n'
        )
    port = free_port()
    argv = _under_mdwe(
        *("-m", "mailwarden", "serve", "--config", str(example_site_file)),
        *("--listen", f"127.0.0.1:{port}", "--workers", "2"),
    )
    base = f"http://127.0.0.1:{port}"
    with (
        _running(argv, port, example_site_file.parent / "serve.log"),
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        xml = client.get("/mail/config-v1.1.xml", params={"emailaddress": "user@example.edu"})
        assert xml.status_code == 200
        assert b"<username>u0001</username>" in xml.content
        profile = client.get("/mobileconfig", params={"emailaddress": "user@example.edu"})
        assert profile.status_code == 200
        assert profile.content[:1] == b"\x30"  # DER: CMS SignedData, signed in the worker
        page = client.get("/", params={"emailaddress": "user@example.edu"})
        assert page.status_code == 200
        assert "u0001" in page.text
        metrics = client.get("/metrics")
        assert "mailwarden_http_requests_total" in metrics.text


@needs_x86_64
@pytest.mark.slow
def test_guard_decides_under_memory_deny_write_execute(tmp_path: Path) -> None:
    port = free_port()
    site = write_site(
        tmp_path,
        f'[guard]\npolicy_listen = "127.0.0.1:{port}"\nstore = "sqlite"\n'
        'state_path = "guard.sqlite"\n',
    )
    argv = _under_mdwe("-m", "mailwarden", "guard", "--config", str(site), "serve")
    with _running(argv, port, tmp_path / "guard.log"):
        client = PolicyClient(("127.0.0.1", port))
        try:
            assert client.rcpt("alice", "friend@example.org") == "DUNNO"
            assert client.eom("alice", 1) == "DUNNO"
        finally:
            client.close()
    assert (tmp_path / "guard.sqlite").is_file()


@needs_x86_64
@pytest.mark.slow
def test_console_serves_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """An argon2id login, the overview (SQLite store, directory), an account and the audit."""
    from tests.console.helpers import ConsoleClient, add_user, console_site

    site = console_site(tmp_path, '[console]\nauth = "local"\nusers_file = "users.txt"\n')
    add_user(site, "ada", "admin", "admin-password-123")
    port = free_port()
    argv = _under_mdwe(
        *("-m", "mailwarden", "console", "--config", str(site)),
        *("--listen", f"127.0.0.1:{port}"),
    )
    with _running(argv, port, tmp_path / "console.log"):
        client = ConsoleClient(f"http://127.0.0.1:{port}")
        assert client.login("ada", "admin-password-123").status_code == 303
        for path in ("/", "/account?q=jdoe%40example.edu", "/audit", "/config"):
            assert client.get(path).status_code == 200, path


@needs_x86_64
def test_audit_cannot_run_without_writable_executable_memory() -> None:
    """pyOpenSSL's OCSP callback (how the audit reads a stapled answer) is a cffi callback,
    which needs writable and executable memory: mailwarden-audit.service must leave
    MemoryDenyWriteExecute= out, and this test says when that changes."""
    probe = (
        "from OpenSSL import SSL; from mailwarden.audit import scan; "
        "SSL.Context(SSL.TLS_CLIENT_METHOD).set_ocsp_client_callback(scan._keep_staple)"
    )
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    filtered = subprocess.run(_under_mdwe("-c", probe), capture_output=True, text=True)
    assert filtered.returncode == 1
    assert "Cannot allocate write+execute memory for ffi.callback()" in filtered.stderr
