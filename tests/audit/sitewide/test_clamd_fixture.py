"""The clamd fixture is a real clamd with the test database: what it answers, and the facts the
antivirus check's design rests on (no built-in EICAR detection; VERSION undated without a
daily database, dated with one)."""

from __future__ import annotations

import hashlib
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailwarden.audit.sitewide.clamd import CLEAN_STREAM, eicar, instream, parse_version
from tests.fixtures.clamd import EICAR_NAME, HARMLESS_MARKER, running_clamd

pytestmark = pytest.mark.slow  # starts clamd

EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
"""The published md5 of the 68-byte EICAR test file."""


def test_the_eicar_string_is_built_right() -> None:
    sample = eicar()
    assert len(sample) == 68
    assert hashlib.md5(sample, usedforsecurity=False).hexdigest() == EICAR_MD5


def test_clamd_answers_ping_version_and_scans(tmp_path: Path) -> None:
    started = time.monotonic()
    with running_clamd(tmp_path) as clamd:
        took = time.monotonic() - started
        assert took < 10, took
        assert clamd.rss_kib() < 200_000
        assert clamd.command(b"zPING\0") == b"PONG\0"
        version = clamd.command(b"zVERSION\0")
        assert version.startswith(b"ClamAV ")
        assert version.endswith(b"\0")
        assert b"/" not in version  # custom signatures only: no daily version, no date
        found = clamd.command(instream(eicar()))
        assert found == f"stream: {EICAR_NAME}.UNOFFICIAL FOUND\0".encode()
        assert clamd.command(instream(CLEAN_STREAM)) == b"stream: OK\0"
        marked = clamd.command(instream(b"xx" + HARMLESS_MARKER + b"yy"))
        assert marked == b"stream: Mailwarden.Test.Harmless.UNOFFICIAL FOUND\0"


def test_clamd_has_no_builtin_eicar_detection(tmp_path: Path) -> None:
    with running_clamd(tmp_path, eicar_signature=False) as clamd:
        assert clamd.command(instream(eicar())) == b"stream: OK\0"


def test_chunks_and_stream_limit(tmp_path: Path) -> None:
    with running_clamd(tmp_path) as clamd:
        # EICAR split over many small chunks is still the same stream.
        assert b"FOUND" in clamd.command(instream(eicar(), chunk=5))
        big = b"zINSTREAM\0" + struct.pack(">I", 2_000_000) + b"x" * 2_000_000
        assert b"ERROR" in clamd.command(big + struct.pack(">I", 0))


def test_a_daily_database_dates_version(tmp_path: Path) -> None:
    published = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=30)
    with running_clamd(tmp_path, published=published) as clamd:
        reply = clamd.command(b"zVERSION\0").rstrip(b"\0").decode()
        version = parse_version(reply)
        assert version is not None, reply
        assert version.signatures == 27999
        assert version.published is not None
        assert version.published.astimezone(UTC) == published
        assert b"FOUND" in clamd.command(instream(eicar()))
