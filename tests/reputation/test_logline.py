"""The log-line parser on real-world Postfix and sendmail lines, and its properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.reputation.logline import Attempt, Clock, format_classic, parse_line
from mailwarden.reputation.reader import LineSplitter

DATA = Path(__file__).parent / "data"
END = datetime(2026, 3, 14, 12, tzinfo=UTC).timestamp()


def _attempts(name: str) -> list[Attempt]:
    clock = Clock(END, UTC)
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [a for a in (parse_line(line, clock) for line in lines) if a is not None]


def test_postfix_lines_give_the_delivery_results() -> None:
    attempts = _attempts("postfix.log")
    first = attempts[0]
    assert first.ts == datetime(2026, 3, 14, 9, 58, 2, tzinfo=UTC).timestamp()
    assert first.outbound == "mx-out1 postfix/smtp"
    assert (first.relay_host, first.relay_ip, first.status) == (
        "gmail-smtp-in.l.google.com",
        "142.250.102.27",
        "sent",
    )
    statuses = [a.status for a in attempts]
    assert statuses.count("sent") == 4  # lmtp, the content filter and qmgr lines are skipped
    assert statuses.count("reply") == 1  # a non-final MX's "said:" line
    assert statuses.count("bounced") == 11
    deferred = [a for a in attempts if a.status == "deferred"]
    assert len(deferred) == 7
    # the reply is the remote answer only, without Postfix's wrapping
    assert deferred[0].reply.startswith("421-4.7.28 [192.0.2.10")
    assert deferred[0].reply.endswith("- gsmtp")
    # relay=none: no host, the recipient domain stands in
    none = [a for a in attempts if not a.relay_host]
    assert [a.domain for a in none] == ["example.com", "gmail.com"]
    # the refused-to-talk form keeps the banner
    gmx = next(a for a in attempts if a.relay_host == "mx01.emig.gmx.net")
    assert gmx.reply.startswith("554-gmx.net (mxgmx117) Nemesis")
    assert {a.outbound for a in attempts} == {"mx-out1 postfix/smtp", "mx-out1 postfix-ip2/smtp"}


def test_sendmail_lines_give_the_delivery_results() -> None:
    attempts = _attempts("sendmail.log")
    assert [a.status for a in attempts] == ["sent", "deferred", "bounced", "deferred"]
    assert attempts[0].relay_host == "gmail-smtp-in.l.google.com"  # trailing dot dropped
    assert attempts[0].relay_ip == "142.250.102.27"
    assert attempts[1].reply.startswith("421 4.7.0 [TSS04]")
    assert attempts[0].outbound == "relay2 sm-mta"


def test_rfc3339_and_postlog_stamps() -> None:
    clock = Clock(END, UTC)
    tail = (
        " mx1 postfix/smtp[1]: 4AB: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com"
        "[142.250.102.27]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)"
    )
    for stamp, expected in (
        ("2026-03-14T10:00:01.250+01:00", datetime(2026, 3, 14, 9, 0, 1, 250000, tzinfo=UTC)),
        ("2026-03-14T09:00:01Z", datetime(2026, 3, 14, 9, 0, 1, tzinfo=UTC)),
        ("2026-03-14T10:00:01+0100", datetime(2026, 3, 14, 9, 0, 1, tzinfo=UTC)),
        ("Mar 14 09:00:01.123456", datetime(2026, 3, 14, 9, 0, 1, tzinfo=UTC)),  # maillog_file
    ):
        attempt = parse_line(stamp + tail, clock)
        assert attempt is not None, stamp
        assert attempt.ts == expected.timestamp(), stamp


def test_the_year_is_inferred() -> None:
    january = datetime(2026, 1, 2, 8, tzinfo=UTC).timestamp()
    clock = Clock(january, UTC)
    assert (
        clock.classic("Dec 31 23:59:59")
        == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    )
    assert clock.classic("Jan  2 07:00:00") == datetime(2026, 1, 2, 7, tzinfo=UTC).timestamp()
    # Feb 29 only exists in 2024 of the candidates 2025/2024
    clock = Clock(datetime(2025, 3, 1, tzinfo=UTC).timestamp(), UTC)
    assert clock.classic("Feb 29 12:00:00") == datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp()
    assert clock.classic("Foo 29 12:00:00") is None
    assert clock.classic("Mar 14 25:00:00") is None
    assert clock.classic("Mar 14 10:61:00") is None


ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)


@settings(max_examples=300)
@given(
    when=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1)),
    zone=ZONES,
    ahead=st.floats(min_value=0, max_value=300 * 86400),
)
def test_classic_stamps_round_trip(when: datetime, zone: timezone, ahead: float) -> None:
    ts = float(int(when.replace(tzinfo=zone).timestamp()))
    clock = Clock(ts + ahead, zone)  # read up to 300 days later: the year must come back
    assert clock.classic(format_classic(ts, zone)) == ts


@settings(max_examples=300)
@given(
    when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1)), zone=ZONES
)
def test_rfc3339_stamps_round_trip(when: datetime, zone: timezone) -> None:
    aware = when.replace(tzinfo=zone)
    assert Clock.iso(aware.isoformat()) == aware.timestamp()


PIECES = st.sampled_from(
    [
        "Mar 14 10:00:01 ",
        "2026-03-14T10:00:01Z ",
        "mx1 ",
        "postfix/smtp[12]: ",
        "4AB: ",
        "to=<a@b>, ",
        "relay=",
        "h[1.2.3.4]:25",
        "relay=none, ",
        "status=",
        "stat=",
        "sent ",
        "deferred (",
        "bounced (",
        "Deferred: ",
        "dsn=5.7.1, ",
        " said: ",
        "host ",
        "[",
        "]",
        " refused to talk to me: ",
        "(in reply to RCPT TO command)",
        ")",
        ":",
        " ",
        "\x00",
        "é",
        "\ufffd",
        "mailer=local, ",
        "Feb 29 ",
        "9999-99-99T ",
    ]
)


@settings(max_examples=2000)
@given(line=st.one_of(st.text(max_size=400), st.lists(PIECES, max_size=30).map("".join)))
def test_any_line_never_raises(line: str) -> None:
    attempt = parse_line(line, Clock(END, UTC))
    if attempt is not None:
        assert attempt.status in ("sent", "deferred", "bounced", "reply")
        assert len(attempt.reply) <= 2000


def test_line_splitter_bounds_monster_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"x" * 100_000) == []
    assert splitter.feed(b"y" * 100_000) == []
    lines = splitter.feed(b"\nnext\xff line\npartial")
    assert len(lines[0]) <= 16_384 + 1
    assert lines[1] == "next\ufffd line"
    assert splitter.flush() == ["partial"]
