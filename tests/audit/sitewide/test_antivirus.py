"""The antivirus check against a real clamd (tests/fixtures/clamd.py), against small servers
that answer wrongly or slowly, and on data directories made in the test's folder."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import antivirus
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.clamd import (
    MAX_REPLY,
    ClamdVersion,
    eicar,
    parse_ctime,
    parse_scan,
    parse_version,
    reply_text,
)
from mailwarden.cli import main
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.fixtures.clamd import CLEAN_NAME, EICAR_NAME, running_clamd
from tests.fixtures.knot import silent_dns
from tests.fixtures.net import free_port
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # starts clamd

SITE = """
primary_domain = "example.test"
[organisation]
name = "Antivirus test"
short_name = "AV"
[[services.main.imap]]
host = "imap.example.test"
[[services.main.smtp]]
host = "smtp.example.test"
[domains."example.test"]
services = "main"
"""


def _site_text(clamd: str | None = None, timeout: float = 3.0, dirs: str = "") -> str:
    text = SITE + f"\n[audit.antivirus]\ntimeout = {timeout}\n"
    if clamd is not None:
        text += f'clamd = "{clamd}"\n'
    return text + dirs


def _data_dir(name: str, path: Path, max_age_hours: float = 24) -> str:
    return (
        f'\n[[audit.antivirus.data_dirs]]\nname = "{name}"\npath = "{path}"\n'
        f"max_age_hours = {max_age_hours}\n"
    )


def _check(text: str, tmp_path: Path, nameserver: str = "127.0.0.1:9") -> list[CheckResult]:
    site = parse_site(text, base_dir=tmp_path)
    resolver = Resolver(parse_nameserver(nameserver), timeout=0.5)
    context = SiteContext(
        site=site,
        resolver=resolver,
        network=Network(resolver, connect_timeout=2.0),
        now=datetime.now(UTC),
        timeout=2.0,
    )
    return asyncio.run(antivirus.run(context))


def _codes(result: CheckResult) -> dict[str, Severity]:
    return {finding.code: finding.severity for finding in result.findings}


def _one(results: list[CheckResult]) -> CheckResult:
    assert len(results) == 1, results
    assert results[0].check == "antivirus"
    return results[0]


# --- a real clamd --------------------------------------------------------------------------


def test_a_healthy_clamd_on_the_unix_socket(tmp_path: Path) -> None:
    published = datetime.now(UTC) - timedelta(hours=2)
    with running_clamd(tmp_path, published=published) as clamd:
        result = _one(_check(_site_text(clamd.unix), tmp_path))
    assert result.findings == ()
    assert result.subject == "clamd"
    assert "signatures 27999" in result.detail
    assert "(2 h old)" in result.detail
    assert f"EICAR detected ({EICAR_NAME}.UNOFFICIAL)" in result.detail
    assert "clean stream passed" in result.detail
    for label in ("PING", "VERSION", "EICAR", "clean"):
        assert re.search(rf"\b{label} \d+ ms", result.detail), label


def test_a_healthy_clamd_over_tcp(tmp_path: Path) -> None:
    published = datetime.now(UTC) - timedelta(hours=1)
    with running_clamd(tmp_path, published=published) as clamd:
        result = _one(_check(_site_text(clamd.tcp), tmp_path))
    assert result.findings == ()
    assert result.detail.startswith(f"tcp:127.0.0.1:{clamd.port}: ClamAV ")


@pytest.mark.parametrize(
    ("hours", "code", "severity"),
    [(30, "AV-SIGNATURES-OLD", Severity.WARNING), (100, "AV-SIGNATURES-STALE", Severity.ERROR)],
)
def test_old_signatures(tmp_path: Path, hours: int, code: str, severity: Severity) -> None:
    with running_clamd(tmp_path, published=datetime.now(UTC) - timedelta(hours=hours)) as clamd:
        result = _one(_check(_site_text(clamd.unix), tmp_path))
    assert _codes(result) == {code: severity}
    assert f"{hours} h old" in result.findings[0].message


def test_custom_signatures_only_leave_the_age_unknown(tmp_path: Path) -> None:
    with running_clamd(tmp_path) as clamd:
        result = _one(_check(_site_text(clamd.unix), tmp_path))
        watched = _check(
            _site_text(clamd.unix, dirs=_data_dir("clamav-db", clamd.database_dir)), tmp_path
        )
    assert _codes(result) == {"AV-SIGNATURES-UNDATED": Severity.UNKNOWN}
    assert "EICAR detected" in result.detail
    # With its DatabaseDirectory watched as a data directory, the missing date is only a note.
    assert [_codes(r) for r in watched] == [{"AV-SIGNATURES-UNDATED": Severity.INFO}, {}]
    assert watched[1].subject == "clamav-db"
    assert "2 data files" in watched[1].detail


def test_a_clamd_without_the_eicar_signature_lets_viruses_through(tmp_path: Path) -> None:
    published = datetime.now(UTC)
    with running_clamd(tmp_path, eicar_signature=False, published=published) as clamd:
        result = _one(_check(_site_text(clamd.unix), tmp_path))
    assert _codes(result) == {"AV-EICAR-MISSED": Severity.ERROR}


def test_a_clamd_that_flags_clean_text(tmp_path: Path) -> None:
    with running_clamd(tmp_path, flag_clean=True, published=datetime.now(UTC)) as clamd:
        result = _one(_check(_site_text(clamd.unix), tmp_path))
    assert _codes(result) == {"AV-CLEAN-FLAGGED": Severity.ERROR}
    assert CLEAN_NAME in result.findings[0].message


def test_a_stopped_clamd_is_down(tmp_path: Path) -> None:
    with running_clamd(tmp_path) as clamd:
        unix, tcp = clamd.unix, clamd.tcp
    for address in (unix, tcp):
        result = _one(_check(_site_text(address), tmp_path))
        assert _codes(result) == {"AV-CLAMD-DOWN": Severity.ERROR}, address
        assert result.findings[0].message.startswith("PING: ")


def test_a_socket_nobody_listens_on_is_down(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # the file exists, nothing accepts: connection refused
        result = _one(_check(_site_text(f"unix:{path}"), tmp_path))
    assert _codes(result) == {"AV-CLAMD-DOWN": Severity.ERROR}
    assert "refused" in result.findings[0].message


def test_a_host_name_that_does_not_resolve_is_unknown(tmp_path: Path) -> None:
    with silent_dns() as nameserver:
        text = _site_text(f"tcp:clamd.example.test:{free_port()}", timeout=3)
        result = _one(_check(text, tmp_path, nameserver=nameserver))
    assert _codes(result) == {"AV-CLAMD-UNREACHABLE": Severity.UNKNOWN}


# --- servers that answer wrongly -----------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _command(reader: asyncio.StreamReader) -> bytes:
    """The command word (``zPING``, ``zINSTREAM``...), and for INSTREAM the whole stream."""
    word = await reader.readuntil(b"\0")
    if word == b"zINSTREAM\0":
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            if size == 0:
                break
            await reader.readexactly(size)
    return word.rstrip(b"\0")


def _serving(tmp_path: Path, handler: Handler, timeout: float = 1.0) -> CheckResult:
    """Run the check against ``handler`` served on a unix socket in the test's folder."""
    path = tmp_path / "fake.sock"

    async def scenario() -> list[CheckResult]:
        server = await asyncio.start_unix_server(handler, str(path))
        async with server:
            site = parse_site(_site_text(f"unix:{path}", timeout=timeout), base_dir=tmp_path)
            resolver = Resolver(parse_nameserver("127.0.0.1:9"), timeout=0.5)
            context = SiteContext(
                site=site,
                resolver=resolver,
                network=Network(resolver, connect_timeout=2.0),
                now=datetime.now(UTC),
                timeout=2.0,
            )
            return await antivirus.run(context)

    return _one(asyncio.run(scenario()))


def _answering(replies: dict[bytes, bytes], delay: float = 0.0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = await _command(reader)
            await asyncio.sleep(delay)
            writer.write(replies.get(command, b"UNKNOWN COMMAND\0"))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


def _like_clamd(eicar_reply: bytes = b"stream: Eicar FOUND\0") -> dict[bytes, bytes]:
    now = datetime.now().strftime("%a %b %e %H:%M:%S %Y").encode()
    return {
        b"zPING": b"PONG\0",
        b"zVERSION": b"ClamAV 1.0.7/27999/" + now + b"\0",
        b"zINSTREAM": eicar_reply,
    }


def test_a_server_that_is_not_clamd(tmp_path: Path) -> None:
    result = _serving(tmp_path, _answering({b"zPING": b"220 smtp.example.test ESMTP\r\n"}))
    assert _codes(result) == {"AV-CLAMD-PROTOCOL": Severity.ERROR}
    assert "not PONG" in result.findings[0].message


def test_garbage_after_pong(tmp_path: Path) -> None:
    replies = {b"zPING": b"PONG\0", b"zVERSION": b"\xff\xfe\x00junk", b"zINSTREAM": b"\x1b[31m?\0"}
    result = _serving(tmp_path, _answering(replies))
    assert _codes(result) == {"AV-CLAMD-PROTOCOL": Severity.ERROR}
    messages = [finding.message for finding in result.findings]
    assert any(m.startswith("VERSION answered") for m in messages)
    assert any(m.startswith("the EICAR scan answered") for m in messages)
    assert all("\x1b" not in m for m in messages)


def test_a_scan_error(tmp_path: Path) -> None:
    replies = _like_clamd(b"INSTREAM size limit exceeded. ERROR\0")
    result = _serving(tmp_path, _answering(replies))
    assert _codes(result) == {"AV-SCAN-ERROR": Severity.ERROR}
    assert "size limit" in result.findings[0].message


def test_an_endless_reply_is_cut(tmp_path: Path) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _command(reader)
            for _ in range(100):
                writer.write(b"P" * 65536)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    result = _serving(tmp_path, flood)
    assert _codes(result) == {"AV-CLAMD-PROTOCOL": Severity.ERROR}
    assert f"longer than {MAX_REPLY} bytes" in result.findings[0].message


def test_a_server_that_closes_at_once(tmp_path: Path) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    result = _serving(tmp_path, close)
    assert _codes(result) == {"AV-CLAMD-PROTOCOL": Severity.ERROR}
    message = result.findings[0].message
    assert "without an answer" in message or "reset by peer" in message


def test_a_silent_server_times_out(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    result = _serving(tmp_path, silent, timeout=0.5)
    assert _codes(result) == {"AV-CLAMD-TIMEOUT": Severity.ERROR}
    assert "within 0.5 s" in result.findings[0].message


def test_a_slow_but_working_scanner_is_a_warning(tmp_path: Path) -> None:
    # timeout 1 s: "slow" above 0.5 s; each answer takes 0.6 s.
    result = _serving(tmp_path, _answering(_like_clamd(), delay=0.6), timeout=1.0)
    codes = _codes(result)
    assert codes.pop("AV-CLAMD-SLOW") is Severity.WARNING
    assert codes == {"AV-CLEAN-FLAGGED": Severity.ERROR}  # this fake says FOUND to everything
    assert "above 500 ms" in next(f.message for f in result.findings if f.code == "AV-CLAMD-SLOW")


def test_a_slow_link_to_a_real_clamd(tmp_path: Path) -> None:
    """A proxy that holds each connection 0.4 s before passing it to the real clamd."""
    with running_clamd(tmp_path, published=datetime.now(UTC)) as clamd:
        socket_path = str(clamd.socket_path)

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            except ConnectionError:
                pass
            finally:
                target.close()

        async def delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(0.4)
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        result = _serving(tmp_path, delayed, timeout=0.7)
    assert _codes(result) == {"AV-CLAMD-SLOW": Severity.WARNING}
    assert "EICAR detected" in result.detail


# --- data directories ----------------------------------------------------------------------


def _files(folder: Path, hours_old: float, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    when = (datetime.now(UTC) - timedelta(hours=hours_old)).timestamp()
    for name in names:
        (folder / name).write_bytes(b"data " * 10)
        os.utime(folder / name, (when, when))


def test_data_directories(tmp_path: Path) -> None:
    _files(tmp_path / "fresh", 1, "vdl-1.vdl", "x.ide")
    _files(tmp_path / "fresh" / "sub", 30, "old.ide")
    _files(tmp_path / "old", 30, "a.ide")
    _files(tmp_path / "stale", 60, "a.ide")
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "vdl.dat").write_bytes(b"")
    (tmp_path / "file").write_text("not a directory")
    # The SAVI story's fix: the old path is a link to the new one.
    (tmp_path / "linked").symlink_to(tmp_path / "fresh")
    dirs = "".join(
        _data_dir(name, tmp_path / name)
        for name in ("fresh", "old", "stale", "empty", "zero", "file", "missing", "linked")
    )
    results = {r.subject: r for r in _check(_site_text(dirs=dirs), tmp_path)}
    assert {name: _codes(r) for name, r in results.items()} == {
        "fresh": {},
        "old": {"AV-DATA-OLD": Severity.WARNING},
        "stale": {"AV-DATA-STALE": Severity.ERROR},
        "empty": {"AV-DATA-EMPTY": Severity.ERROR},
        "zero": {"AV-DATA-EMPTY": Severity.ERROR},
        "file": {"AV-DATA-MISSING": Severity.ERROR},
        "missing": {"AV-DATA-MISSING": Severity.ERROR},
        "linked": {},
    }
    assert "3 data files" in results["fresh"].detail
    assert "(1 h old)" in results["fresh"].detail
    assert "1 empty files" in results["zero"].findings[0].message


def test_nothing_configured(tmp_path: Path) -> None:
    assert _check(SITE, tmp_path) == []
    result = _one(_check(_site_text(), tmp_path))
    assert _codes(result) == {"AV-NOTHING-CONFIGURED": Severity.INFO}


# --- the EICAR string stays out of the repository -------------------------------------------


def test_no_file_in_the_repository_holds_the_eicar_string() -> None:
    sample = eicar()
    assert len(sample) == 68
    checked = 0
    for top in ("src", "tests", "docs", "examples", "packaging", "scripts"):
        for path in (ROOT / top).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.stat().st_size > 5_000_000:
                continue
            assert sample not in path.read_bytes(), path
            checked += 1
    for path in ROOT.glob("*"):
        if path.is_file():
            assert sample not in path.read_bytes(), path
    assert checked > 50


# --- the parsers take anything ---------------------------------------------------------------


@given(st.binary(max_size=600))
def test_any_reply_parses_without_error(raw: bytes) -> None:
    text = reply_text(raw)
    assert "\0" not in text
    version = parse_version(text)
    assert version is None or isinstance(version, ClamdVersion)
    scan = parse_scan(text)
    assert scan is None or scan.verdict in ("clean", "found", "error")
    parse_ctime(text)


@given(st.text(max_size=300))
def test_any_text_parses_without_error(text: str) -> None:
    parse_version(text)
    parse_scan(text)
    parse_ctime(text)


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 12, 31)),
    st.integers(min_value=0, max_value=10**9),
)
def test_version_lines_round_trip(when: datetime, number: int) -> None:
    when = when.replace(microsecond=0)
    ctime = when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")
    version = parse_version(f"ClamAV 1.0.7/{number}/{ctime}")
    assert version == ClamdVersion("1.0.7", number, when)


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)
)
def test_found_replies_name_the_signature(name: str) -> None:
    scan = parse_scan(f"stream: {name} FOUND")
    assert scan is not None
    assert (scan.verdict, scan.name) == ("found", name)


def test_known_replies() -> None:
    assert parse_version("ClamAV 1.4.6") == ClamdVersion("1.4.6")
    assert parse_version("ClamAV 1.0.7/27999/Thu Dec  3 09:00:00 2026") == ClamdVersion(
        "1.0.7", 27999, datetime(2026, 12, 3, 9, 0, 0)
    )
    assert parse_version("ClamAV 1.0.7/27999/yesterday") == ClamdVersion("1.0.7", 27999, None)
    assert parse_version("PONG") is None
    assert parse_ctime("Thu Feb 31 09:00:00 2026") is None
    assert parse_scan("stream: OK") is not None
    assert parse_scan("stream: Win.Test.EICAR_HDB-1 FOUND") is not None
    error = parse_scan("INSTREAM size limit exceeded. ERROR")
    assert error is not None
    assert error.verdict == "error"
    assert parse_scan("stream: okay") is None


# --- through the command line ----------------------------------------------------------------


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_clamd(tmp_path, eicar_signature=False, published=datetime.now(UTC)) as clamd:
        site = tmp_path / "site.toml"
        site.write_text(_site_text(clamd.unix), encoding="utf-8")
        capsys.readouterr()
        status = main(
            [
                *("audit", "--config", str(site), "--only", "antivirus"),
                *("--resolver", "127.0.0.1:9", "--format", "json"),
            ]
        )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    report = json.loads(out)
    assert status == 2 == report["exit_status"]
    codes = {finding["code"] for finding in report["findings"]}
    assert codes == {"AV-EICAR-MISSED"}
