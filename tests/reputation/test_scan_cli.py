"""``mailwarden reputation scan`` through the real CLI: periods, trends, formats, exit status."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from mailwarden.cli import main

DATA = Path(__file__).parent / "data"
UNTIL = "2026-03-14T12:00:00+00:00"


def _scan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(
        ["reputation", "scan", *args, "--until", UNTIL, "--tz", "UTC", "--format", "json"]
    )
    return status, json.loads(capsys.readouterr().out)


def test_scan_counts_per_provider_and_outbound(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = _scan(
        capsys,
        str(DATA / "postfix.log"),
        str(DATA / "sendmail.log"),
        "--outbound",
        "postfix-ip2/smtp=192.0.2.2",
    )
    assert status == 2
    assert report["state"] == "block"
    assert report["exit_status"] == 2
    providers = {p["provider"]: p for p in report["providers"]}
    google = providers["google"]
    assert google["current"]["sent"] == 4
    assert google["current"]["deferred"] == 4
    assert google["current"]["bounced"] == 2
    assert google["current"]["signatures"] == {
        "google-unauthenticated": 1,
        "google-unsolicited-ip": 1,
        "google-unsolicited-message": 1,
        "google-unsolicited-rate": 2,
    }
    outbounds = {o["outbound"]: o for o in google["outbounds"]}
    assert outbounds["192.0.2.2 (mx-out1 postfix-ip2/smtp)"]["state"] == "ok"
    assert outbounds["relay2 sm-mta"]["state"] == "throttle"
    assert outbounds["mx-out1 postfix/smtp"]["state"] == "block"
    assert providers["other"]["current"]["blocklist"] == 2
    assert report["previous"]["end"] == report["current"]["start"] == "2026-03-13T12:00:00Z"
    sig = next(s for s in report["signatures"] if s["id"] == "microsoft-s3140")
    assert sig["kind"] == "block"
    assert "(S3140)" in sig["sample"]
    assert sig["link"]


def test_trend_compares_with_the_previous_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same log a day earlier is the previous period; a rotated .gz holds it.
    today = (DATA / "postfix.log").read_text(encoding="utf-8")
    yesterday = today.replace("Mar 14 ", "Mar 13 ")
    rotated = tmp_path / "mail.log.1.gz"
    with gzip.open(rotated, "wt", encoding="utf-8") as f:
        f.write(yesterday)
    current = tmp_path / "mail.log"
    current.write_text("\n".join(line for line in today.splitlines() if "gmail" not in line) + "\n")
    _, report = _scan(capsys, str(rotated), str(current))
    google = next(p for p in report["providers"] if p["provider"] == "google")
    assert google["previous"]["sent"] == 3
    assert google["previous"]["throttle"] == 2
    assert google["state"] == "block"  # aspmx 5.7.26 and a relay=none line stay
    assert google["current"]["throttle"] == 0
    assert report["lines"]["read"] == 2 * len(today.splitlines()) - sum(
        "gmail" in line for line in today.splitlines()
    )


def test_exit_status_follows_the_worst_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (DATA / "postfix.log").read_text(encoding="utf-8").splitlines()
    calm = tmp_path / "calm.log"
    calm.write_text("\n".join(line for line in lines if "status=sent" in line) + "\n")
    assert _scan(capsys, str(calm))[0] == 0
    throttled = tmp_path / "throttled.log"
    throttled.write_text(
        "\n".join(line for line in lines if "status=sent" in line or "TSS04" in line)
    )
    status, report = _scan(capsys, str(throttled))  # no final newline: the last line counts
    assert status == 1
    assert report["state"] == "throttle"
    # outside both periods: nothing counts
    status, report = _scan(capsys, str(DATA / "postfix.log"), "--since", "1h")
    assert report["lines"]["outside"] > 0


def test_unreadable_log_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["reputation", "scan", str(tmp_path / "missing.log")])
    assert status == 3
    assert "cannot read" in capsys.readouterr().err
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"Mar 14 10:00:00 x postfix/smtp[1]: status=sent\n")[:-12])
    assert main(["reputation", "scan", str(broken)]) == 3
    assert main(["reputation", "scan", str(DATA / "postfix.log"), "--since", "soon"]) == 3


def test_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["reputation", "scan", str(DATA / "postfix.log"), "--until", UNTIL, "--tz", "UTC"]
    )
    out = capsys.readouterr().out
    assert status == 2
    for word in ("google", "microsoft", "yahoo", "microsoft-s3140", "What to do", "block"):
        assert word in out


def test_signatures_listing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reputation", "signatures", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ids = {s["id"] for s in data["signatures"]}
    assert {"google-unsolicited-rate", "microsoft-s3150", "yahoo-tss09"} <= ids
    assert any(p["id"] == "t-online" for p in data["providers"])


def test_docs_describe_every_builtin_signature() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "reputation.md").read_text(encoding="utf-8")
    from mailwarden.reputation.signatures import load_signatures

    for sig in load_signatures().signatures:
        assert f"`{sig.id}`" in docs, sig.id
