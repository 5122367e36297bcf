"""Every sendmail rule, on the .mc and on the .cf that the real m4 and sendmail-cf make of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.paths import shared_dir
from tests.lint.tools import codes, lint, m4_cf, outcome

NAME = "smtp-out.rrz.uni-koeln.de"
V4 = "134.95.1.25"
V6 = "2a00:a200:0:12::25"
SEED = "000_a155d9cd5d271d7b.txt"


def seed_config(which: str) -> str:
    """The five DAEMON/CLIENT_OPTIONS lines of the sendmail post, byte for byte."""
    lines = (shared_dir() / "seeds" / SEED).read_text(encoding="utf-8").splitlines()
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith(("DAEMON_OPTIONS(", "CLIENT_OPTIONS(")):
            if not blocks or len(blocks[-1]) == 5:
                blocks.append([])
            blocks[-1].append(line)
    assert len(blocks) >= 2, blocks
    assert all(len(b) == 5 for b in blocks[:2]), blocks
    return "\n".join(blocks[0 if which == "original" else 1])


@pytest.fixture(params=["mc", "cf"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def config(tmp_path: Path, form: str, body: str, *, msa: bool = True) -> Path:
    """A .mc with ``body`` (OSTYPE first so m4 is happy), or the .cf m4 makes of it."""
    features = "" if msa else "FEATURE(`no_default_msa')dnl\n"
    tmp_path.mkdir(parents=True, exist_ok=True)
    mc = tmp_path / "test.mc"
    mc.write_text(
        f"OSTYPE(`linux')dnl\n{features}{body}\nMAILER(`local')dnl\nMAILER(`smtp')dnl\n",
        encoding="utf-8",
    )
    return mc if form == "mc" else m4_cf(mc)


def hosts(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def line_of(path: Path, needle: str) -> int:
    """The line of ``path`` (the .mc or the generated .cf) that holds ``needle``."""
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in text and not text.startswith("#"):
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def finding(report: dict[str, Any], code: str, subject: str) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["code"] == code and f["subject"] == subject]
    assert len(found) == 1, (code, subject, codes(report))
    return dict(found[0])


# --- the seed's story ----------------------------------------------------------------------


def test_seed_name_with_only_an_a_record_is_fatal_s3_on_the_inet6_daemon_and_client(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, seed_config("original"))
    status, report = lint(
        "sendmail", str(path), "--hosts", hosts(tmp_path, f"{V4} {NAME}"), "--bindv6only", "0",
        capsys=capsys,
    )  # fmt: skip
    assert status == 2
    daemon = finding(report, "S3", "daemon MTA-v6")
    client = finding(report, "S3", "client MSA-v6")
    for item in (daemon, client):
        assert item["severity"] == "fatal"
        assert f'host "{NAME}" unknown' in str(item["message"])
        assert "A=IPv6:" in str(item["fix"])
    assert daemon["line"] == line_of(path, "Name=MTA-v6")
    assert client["line"] == line_of(path, "Name=MSA-v6")
    assert str(daemon["fix"]).startswith(
        "DAEMON_OPTIONS(`Name=MTA-v6,Family=inet6,A=IPv6:" if form == "mc"
        else "O DaemonPortOptions=Name=MTA-v6,Family=inet6,A=IPv6:"
    )  # fmt: skip
    # The IPv4 lines work but are host names too: warnings with the IPv4 literal as the fix.
    assert finding(report, "S3", "daemon MTA-v4")["severity"] == "warning"
    assert f"A={V4}" in str(finding(report, "S3", "client MSA-v4")["fix"])
    assert outcome(report, "MTA-v6") == "fatal at start-up"
    assert outcome(report, "MSA-v6", "client") == "fatal at start-up"
    assert outcome(report, "sendmail", "mta") == "fatal at start-up"


def test_seed_name_with_a_and_aaaa_binds_and_recommends_the_literals(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, seed_config("original"))
    table = hosts(tmp_path, f"{V4} {NAME}", f"{V6} {NAME}")
    status, report = lint("sendmail", str(path), "--hosts", table, "--bindv6only", "0",
                          capsys=capsys)  # fmt: skip
    assert status == 1
    assert {c for c, s, _ in codes(report)} == {"S3"}
    assert all(s == "warning" for _, s, _ in codes(report))
    assert f"A=IPv6:{V6}" in str(finding(report, "S3", "daemon MTA-v6")["fix"])
    assert f"A=IPv6:{V6}" in str(finding(report, "S3", "client MSA-v6")["fix"])
    assert outcome(report, "MTA-v6") == "binds"
    assert outcome(report, "sendmail", "mta") == "starts"


def test_seed_workaround_is_clean_apart_from_the_ipv4_host_names(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, seed_config("workaround"))
    status, report = lint(
        "sendmail", str(path), "--hosts", hosts(tmp_path, f"{V4} {NAME}"), "--bindv6only", "0",
        capsys=capsys,
    )  # fmt: skip
    assert status == 1
    assert codes(report) == [
        ("S3", "warning", "daemon MTA-v4"),
        ("S3", "warning", "client MSA-v4"),
    ]
    details = {p["subject"]: p["detail"] for p in report["predictions"]}
    assert details["MTA-v6"] == f"listens on [{V6}]:25"


@pytest.mark.parametrize("bindv6only", ["0", "1"])
def test_seed_on_an_old_sendmail_gets_a_mapped_address_s2(
    tmp_path: Path, form: str, bindv6only: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, seed_config("original"))
    status, report = lint(
        "sendmail", str(path), "--hosts", hosts(tmp_path, f"{V4} {NAME}"),
        "--bindv6only", bindv6only, "--sendmail-version", "8.14",
        capsys=capsys,
    )  # fmt: skip
    assert status == 2
    daemon = finding(report, "S2", "daemon MTA-v6")
    assert daemon["severity"] == "fatal"
    assert f"::ffff:{V4}" in str(daemon["message"])
    expected = "Address already in use" if bindv6only == "0" else "Invalid argument"
    assert expected in str(daemon["message"])
    assert "A=IPv6:" in str(daemon["fix"])
    assert finding(report, "S2", "client MSA-v6")["severity"] == "fatal"
    # A bind error is not retried (the real sendmail exits within a second); a listen error is.
    exits = "MTA exits after ~50 s" if bindv6only == "0" else "MTA exits at once"
    assert outcome(report, "MTA-v6") == exits
    client = "delivery fails" if bindv6only == "0" else "not started"
    assert outcome(report, "MSA-v6", "client") == client
    assert outcome(report, "sendmail", "mta") == exits


def test_resolver_answering_a_mapped_address_is_s2_on_a_current_sendmail(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, seed_config("original"))
    status, report = lint(
        "sendmail", str(path), "--resolve", f"{NAME}={V4},::ffff:{V4}", "--bindv6only", "0",
        "--sendmail-version", "8.17", capsys=capsys,
    )  # fmt: skip
    assert status == 2
    assert finding(report, "S2", "daemon MTA-v6")["severity"] == "fatal"


@pytest.mark.parametrize("modifiers", ["b", "fhb", "bh"])
def test_m_b_in_a_dual_stack_setup_is_s4(
    tmp_path: Path, form: str, modifiers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = seed_config("workaround").replace("M=fh'", f"M={modifiers}'")
    path = config(tmp_path, form, body)
    status, report = lint(
        "sendmail", str(path), "--resolve", f"{NAME}={V4}", "--bindv6only", "0", capsys=capsys
    )
    assert status == 1
    rest = modifiers.replace("b", "")
    for name in ("MTA-v4", "MTA-v6"):
        item = finding(report, "S4", f"daemon {name}")
        assert item["severity"] == "warning"
        daemon, *clients = str(item["fix"]).splitlines()
        assert daemon.startswith(
            f"{'DAEMON_OPTIONS(`' if form == 'mc' else 'O DaemonPortOptions='}"
        )
        assert f"Name={name}," in daemon
        assert (f",M={rest}" in daemon) if rest else ("M=" not in daemon)
        assert [c.split("Family=")[1].split(",")[0] for c in clients] == ["inet", "inet6"]
        assert f"Addr=IPv6:{V6}" in clients[1]


def test_m_b_in_an_ipv4_only_setup_is_fine(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "DAEMON_OPTIONS(`Port=smtp, Name=MTA, Addr=192.0.2.25, M=b')dnl"
    path = config(tmp_path, form, body)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert (status, codes(report)) == (0, [])


# --- S1, S5, S6, S7 and what is not a finding -------------------------------------------------


@pytest.mark.parametrize("v4addr", ["", "Addr=127.0.0.1, "])
def test_inet6_wildcard_beside_an_inet_daemon_is_s1(
    tmp_path: Path, form: str, v4addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        f"DAEMON_OPTIONS(`Port=smtp, {v4addr}Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA-v6, Family=inet6')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert status == 2
    assert codes(report) == [("S1", "fatal", "daemon MTA-v6")]
    item = report["findings"][0]
    assert item["line"] == line_of(path, "Name=MTA-v6")
    assert "Addr=IPv6:" in item["fix"]
    assert "wedged" in item["message"]
    assert outcome(report, "MTA-v6") == "MTA exits after ~50 s"
    assert outcome(report, "MTA-v4") == "binds"
    # The same sockets with bindv6only=1 coexist: nothing to report.
    status, report = lint("sendmail", str(path), "--bindv6only", "1", capsys=capsys)
    assert (status, codes(report)) == (0, [])


def test_inet6_wildcard_first_makes_the_later_inet_daemon_fail_still_s1_on_the_inet6_line(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA-v6, Family=inet6')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Addr=127.0.0.1, Name=MTA')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert status == 2
    assert codes(report) == [("S1", "fatal", "daemon MTA-v6")]
    assert outcome(report, "MTA") == "MTA exits after ~50 s"


def test_cf_m4_default_daemons_with_netinet6_are_s1(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, form, "define(`_NETINET6_')dnl")
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert status == 2
    assert ("S1", "fatal", "daemon MTA-v6") in codes(report)
    assert outcome(report, "MSA") == "binds"


def test_m_o_masks_the_collision_s5(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA-v6, Family=inet6, M=O')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert status == 1
    assert codes(report) == [("S5", "warning", "daemon MTA-v6")]
    assert "S1" in report["findings"][0]["message"]
    assert outcome(report, "MTA-v6") == "silently disabled"
    assert outcome(report, "sendmail", "mta") == "starts"


def test_same_family_wildcard_and_specific_address_is_s6(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA')dnl\n"
        "DAEMON_OPTIONS(`Port=25, Addr=127.0.0.1, Name=MTA-local')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "1", capsys=capsys)
    assert status == 2
    assert codes(report) == [("S6", "fatal", "daemon MTA-local")]


def test_lone_inet6_wildcard_refuses_ipv4_with_bindv6only_1_s7(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "DAEMON_OPTIONS(`Port=smtp, Addr=::, Name=MTA-v6, Family=inet6')dnl"
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "1", capsys=capsys)
    assert status == 1
    assert codes(report) == [("S7", "warning", "daemon MTA-v6")]
    assert outcome(report, "MTA-v6") == "IPv4 refused"
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert (status, codes(report)) == (0, [])
    assert "IPv4 too" in report["predictions"][1]["detail"]


def test_specific_ipv6_beside_ipv4_daemons_is_not_a_finding(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Addr=192.0.2.25, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Addr=127.0.0.1, Name=MTA')dnl\n"
        f"DAEMON_OPTIONS(`Port=smtp, Addr=IPv6:{V6}, Name=MTA-v6, Family=inet6')dnl\n"
        f"CLIENT_OPTIONS(`Family=inet6, Addr={V6}')dnl"
    )
    path = config(tmp_path, form, body)
    for bindv6only in ("0", "1"):
        status, report = lint("sendmail", str(path), "--bindv6only", bindv6only, capsys=capsys)
        assert (status, codes(report)) == (0, []), report


def test_mapped_literal_beside_the_inet_daemon_is_s2(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Addr=192.0.2.25, Name=MTA-v4')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Addr=IPv6:::ffff:192.0.2.25, Name=MTA-v6, Family=inet6')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert status == 2
    assert codes(report) == [("S2", "fatal", "daemon MTA-v6")]
    assert outcome(report, "MTA-v6") == "MTA exits after ~50 s"
    # Without an IPv4 daemon on that address it binds, but serves IPv4 only: a warning.
    path = config(tmp_path / "alone", form, body.splitlines()[1], msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "0", capsys=capsys)
    assert (status, codes(report)) == (1, [("S2", "warning", "daemon MTA-v6")])


@pytest.mark.parametrize(
    ("addr", "family"), [("2001:db8::25", "inet"), ("nowhere.invalid", "inet6")]
)
def test_wrong_family_literal_or_unknown_name_is_fatal_s3(
    tmp_path: Path, form: str, addr: str, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = f"DAEMON_OPTIONS(`Port=smtp, Addr={addr}, Name=X, Family={family}')dnl"
    path = config(tmp_path, form, body, msa=False)
    status, report = lint(
        "sendmail", str(path), "--hosts", hosts(tmp_path), "--bindv6only", "0", capsys=capsys
    )
    assert status == 2
    assert codes(report) == [("S3", "fatal", "daemon X")]


# --- S8: one name for two daemons ----------------------------------------------------------


def test_two_daemons_with_one_name_is_an_s8_note_with_a_new_name(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA, Family=inet6')dnl\n"
        "DAEMON_OPTIONS(`Port=587, Name=MSA, M=Ea')dnl\n"
        "DAEMON_OPTIONS(`Port=2525, Name=msa, Addr=127.0.0.1')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "1", capsys=capsys)
    assert status == 0  # only notes: sendmail starts and serves all four
    assert codes(report) == [("S8", "info", "daemon MTA"), ("S8", "info", "daemon msa")]
    first, second = report["findings"]
    assert first["line"] == line_of(path, "Name=MTA, Family=inet6")
    assert "Name=MTA-v6" in first["fix"]
    assert "Family=inet6" in first["fix"]
    assert second["line"] == line_of(path, "Name=msa")
    assert "Name=msa-2" in second["fix"]
    assert all(outcome(report, name) == "binds" for name in ("MSA", "msa"))


def test_distinct_names_and_unnamed_daemons_are_not_s8(
    tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "DAEMON_OPTIONS(`Port=smtp, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port=587, M=Ea')dnl\n"
        "DAEMON_OPTIONS(`Port=smtp, Name=MTA-v6, Family=inet6')dnl"
    )
    path = config(tmp_path, form, body, msa=False)
    status, report = lint("sendmail", str(path), "--bindv6only", "1", capsys=capsys)
    assert (status, codes(report)) == (0, [])
