"""``mailwarden audit --save-dir``: each run's JSON and HTML report kept under its start time,
``latest.*`` pointing at the newest, the oldest beyond ``--keep`` deleted; then the operator
console over HTTP showing the newest run's own HTML report and the counts of every kept run.

The audits are real runs of the cheapest check (``spf``) against a real Knot DNS, whose zone
changes between runs so that their finding counts differ.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.audit.report.saved import LATEST_HTML, LATEST_JSON, run_key, save_run, stem_for
from mailwarden.cli import main
from mailwarden.errors import InputError
from tests.console.helpers import ConsoleClient, add_user, console_site, running_console
from tests.fixtures.knot import running_knot

D = "saved.test"
ZONES = (
    '@ TXT "v=spf1 ip4:192.0.2.25 -all"',  # clean
    '@ TXT "v=spf1 +all"',  # SPF-PASS-ALL: an error
    "@ A 192.0.2.80",  # SPF-NONE: a warning
)
SITE = f"""\
primary_domain = "{D}"

[organisation]
name = "Saved Runs University"
short_name = "SRU"

[server]
public_host = "autoconfig.{D}"

[[services.campus.imap]]
host = "imap.{D}"
port = 993
tls = "implicit"

[[services.campus.smtp]]
host = "smtp.{D}"
port = 587
tls = "starttls"

[domains."{D}"]
services = "campus"

[audit]
mx = false
"""


@dataclass
class Runs:
    folder: Path
    statuses: list[int]
    reports: list[dict[str, object]]
    """What each run wrote to standard output (--format json), oldest first."""


def _audit(site: Path, nameserver: str, folder: Path, keep: int) -> tuple[int, str]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mailwarden", "audit", "--config", str(site)),
            *("--only", "spf", "--resolver", nameserver, "--format", "json"),
            *("--save-dir", str(folder), "--keep", str(keep)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("saved")
    site = tmp / "site.toml"
    site.write_text(SITE, encoding="utf-8")
    folder = tmp / "audit"
    result = Runs(folder, [], [])
    (folder / "keep").mkdir(parents=True)
    (folder / "notes.txt").write_text("an admin's file, never pruned\n", encoding="utf-8")
    with running_knot({D: ZONES[0]}, tmp) as knot:
        for zone in (*ZONES, ZONES[1]):
            knot.reload(D, zone)
            status, out = _audit(site, knot.nameserver, folder, keep=3)
            result.statuses.append(status)
            result.reports.append(json.loads(out))
    return result


def _runs_in(folder: Path) -> list[str]:
    """The saved runs' files, oldest first (html before json)."""
    named = [(key, p.name) for p in folder.iterdir() if (key := run_key(p.name)) is not None]
    return [name for _, name in sorted(named)]


@pytest.mark.slow  # knotd (and the console)
def test_each_run_is_kept_as_json_and_html_and_the_oldest_pruned(runs: Runs) -> None:
    assert runs.statuses == [0, 2, 1, 2]
    names = _runs_in(runs.folder)
    assert len(names) == 6  # three runs of four (--keep 3), two files each
    stems = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
    assert [f"{s}.{ext}" for s in stems for ext in ("html", "json")] == names
    kept = [json.loads((runs.folder / f"{s}.json").read_text()) for s in stems]
    assert [k["started"] for k in kept] == [r["started"] for r in runs.reports[1:]]
    assert [k["counts"] for k in kept] == [r["counts"] for r in runs.reports[1:]]
    # the saved JSON is the report --format json prints, the HTML the one --format html writes
    html = (runs.folder / f"{stems[-1]}.html").read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>")
    assert "SPF-PASS-ALL" in html
    # nothing else in the folder was touched, and no temporary file is left
    assert (runs.folder / "notes.txt").is_file()
    assert (runs.folder / "keep").is_dir()
    assert not [p for p in runs.folder.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # knotd (and the console)
def test_latest_points_at_the_newest_run(runs: Runs) -> None:
    newest = _runs_in(runs.folder)[-1].rsplit(".", 1)[0]
    for name, ext in ((LATEST_JSON, "json"), (LATEST_HTML, "html")):
        link = runs.folder / name
        assert link.is_symlink()
        assert os.readlink(link) == f"{newest}.{ext}"  # relative: the folder can move
    latest = json.loads((runs.folder / LATEST_JSON).read_text())
    assert latest == runs.reports[-1]


@pytest.mark.slow  # knotd (and the console)
def test_the_console_shows_the_newest_html_report_and_every_kept_run(
    runs: Runs, tmp_path: Path
) -> None:
    site = console_site(
        tmp_path,
        f'[console]\nauth = "local"\nusers_file = "users.txt"\naudit_dir = "{runs.folder}"\n',
    )
    add_user(site, "ada", "admin", "admin-password-123")
    with running_console(site) as server:
        client = ConsoleClient(server.url)
        assert client.login("ada", "admin-password-123").status_code == 303
        page = client.get("/audit")
        assert page.status_code == 200
        assert "frame-src 'self'" in page.headers["content-security-policy"]
        assert '<iframe id="report" class="report" src="/audit/report"' in page.text
        rows = page.text.split('<table id="runs">', 1)[1].split("</table>", 1)[0]
        cells = [row.split("</tr>")[0] for row in rows.split("<tr>")[2:]]
        assert len(cells) == 3  # the kept runs, newest first
        kept = runs.reports[1:]
        for row, report in zip(cells, reversed(kept), strict=True):
            counts: dict[str, int] = report["counts"]  # type: ignore[assignment]
            assert f'<td class="when">{report["started"]}</td>' in row
            critical, warning = counts.get("error", 0), counts.get("warning", 0)
            assert f"<td>{critical}</td><td>{warning}</td>" in row, row
        assert "<td>1</td><td>0</td>" in cells[0]
        assert "<td>0</td><td>1</td>" in cells[1]
        served = client.get("/audit/report")
        assert served.status_code == 200
        assert served.content == (runs.folder / LATEST_HTML).read_bytes()
        policy = served.headers["content-security-policy"]
        assert "style-src 'sha256-" in policy
        assert "script-src" not in policy
        assert "frame-ancestors 'self'" in policy
        assert policy.endswith("sandbox")
        assert served.headers["x-frame-options"] == "SAMEORIGIN"
        assert ConsoleClient(server.url).get("/audit/report").status_code == 303  # login first


# -- without DNS: names, pruning, bad input ------------------------------------------------


def test_two_runs_in_one_second_do_not_overwrite_each_other(tmp_path: Path) -> None:
    started = "2026-01-05T06:00:00+00:00"
    first = save_run(tmp_path, started, "{}\n", "<p>1</p>\n", keep=5)
    second = save_run(tmp_path, started, "{}\n", "<p>2</p>\n", keep=5)
    assert first.json.name == "audit-20260105T060000Z.json"
    assert second.json.name == "audit-20260105T060000Z-2.json"
    assert (tmp_path / LATEST_HTML).read_text() == "<p>2</p>\n"


def test_pruning_keeps_the_newest_and_only_touches_saved_runs(tmp_path: Path) -> None:
    (tmp_path / "audit-notes.json").write_text("{}")  # not a run's name
    for hour in range(5):
        save_run(tmp_path, f"2026-01-05T0{hour}:00:00+00:00", "{}", "<p></p>", keep=2)
    assert _runs_in(tmp_path) == [
        "audit-20260105T030000Z.html",
        "audit-20260105T030000Z.json",
        "audit-20260105T040000Z.html",
        "audit-20260105T040000Z.json",
    ]
    assert (tmp_path / "audit-notes.json").is_file()


def test_bad_keep_and_unwritable_folder_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--keep 0"):
        save_run(tmp_path, "2026-01-05T06:00:00+00:00", "{}", "", keep=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="--save-dir"):
        save_run(blocker / "sub", "2026-01-05T06:00:00+00:00", "{}", "", keep=1)


def test_cli_refuses_a_bad_keep_before_auditing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE, encoding="utf-8")
    status = main(["audit", "-c", str(site), "--save-dir", str(tmp_path), "--keep", "-1"])
    assert status == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not _runs_in(tmp_path)


@given(
    st.datetimes(
        min_value=datetime.datetime(2000, 1, 2),
        max_value=datetime.datetime(2999, 12, 30),
        timezones=st.timezones(),
    ),
    st.integers(min_value=1, max_value=3),
)
def test_a_saved_name_sorts_by_its_start_time(when: datetime.datetime, taken: int) -> None:
    with tempfile.TemporaryDirectory() as raw:
        folder = Path(raw)
        names = []
        for _ in range(taken):
            stem = stem_for(when.isoformat(), folder)
            (folder / f"{stem}.json").write_text("")
            names.append(f"{stem}.json")
        keys = [run_key(n) for n in names]
        assert all(k is not None for k in keys)
        assert sorted(keys) == keys  # type: ignore[type-var]
        utc = when.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        assert {k[0] for k in keys if k} == {utc}
