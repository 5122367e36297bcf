"""The signature data: every built-in answer recognised, the prefilter safe, site files."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.reputation.logline import Clock, parse_line
from mailwarden.reputation.signatures import SignatureError, load_signatures, needles

DATA = Path(__file__).parent / "data"
SIGS = load_signatures()
END = datetime(2026, 3, 14, 12, tzinfo=UTC).timestamp()

EXPECTED = {  # relay host (or recipient domain) → (provider, signature id or None)
    "postfix.log": [
        ("google", None),
        ("google", "google-unsolicited-rate"),
        ("google", "google-unsolicited-ip"),
        ("google", None),
        ("google", "google-unauthenticated"),
        ("google", "google-unsolicited-message"),
        ("google", None),  # 450-4.2.1 the *recipient* receives too fast: not reputation
        ("microsoft", "microsoft-s3140"),
        ("microsoft", "microsoft-s3150"),
        ("microsoft", "microsoft-banned-ip"),
        ("microsoft", "microsoft-ip-reputation-rate"),
        ("microsoft", None),
        ("yahoo", "yahoo-tss04"),
        ("yahoo", "yahoo-tss09"),
        ("gmx", "ui-blocklisted"),
        ("webde", "ui-nemesis-rejected"),
        ("t-online", "t-online-blocked"),
        ("other", "blocklist-spamhaus"),
        ("other", "blocklist-spamcop"),
        ("other", None),  # connection timed out
        ("google", None),  # relay=none, gmail.com recipient
        ("other", None),  # mailbox full
        ("google", None),
    ],
    "sendmail.log": [
        ("google", None),
        ("yahoo", "yahoo-tss04"),
        ("microsoft", None),
        ("google", "google-unsolicited-rate"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_answers_are_recognised(name: str) -> None:
    clock = Clock(END, UTC)
    got = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        a = parse_line(line, clock)
        if a is None:
            continue
        provider = SIGS.provider_of(a.relay_host, a.domain)
        sig = SIGS.match(provider, a.reply)
        got.append((provider, sig.id if sig else None))
    assert got == EXPECTED[name]


def test_provider_hosts() -> None:
    for host, provider in (
        ("alt3.gmail-smtp-in.l.google.com", "google"),
        ("ASPMX.L.GOOGLE.COM.", "google"),
        ("smtp.google.com", "google"),
        ("contoso-com.mail.protection.outlook.com", "microsoft"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("mx00.emig.gmx.net", "gmx"),
        ("mx01.gmx.net", "gmx"),
        ("mx-ha02.web.de", "webde"),
        ("mx01.t-online.de", "t-online"),
        ("mx01.mail.icloud.com", "apple"),
        ("mx.example.net", "other"),
        ("google.com.evil.example", "other"),
    ):
        assert SIGS.provider_of(host) == provider, host
    assert SIGS.provider_of("", "GMX.DE") == "gmx"
    assert SIGS.provider_of("", "") == "other"


def test_signatures_are_provider_scoped() -> None:
    # Gmail's generic policy answer from some other server is not Gmail's signature
    assert SIGS.match("other", "550-5.7.1 policy") is None
    assert SIGS.match("google", "550-5.7.1 policy").id == "google-policy"  # type: ignore[union-attr]
    assert SIGS.match("other", "554 rejected, see https://www.spamhaus.org/q").id == (  # type: ignore[union-attr]
        "blocklist-spamhaus"
    )


@pytest.mark.parametrize("sig", [s for s in SIGS.signatures if s.needles], ids=lambda s: s.id)
@settings(
    max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data())
def test_needles_never_hide_a_match(sig, data) -> None:
    """A string the pattern matches always contains one of its needles."""
    text = data.draw(st.from_regex(re.compile(sig.pattern.pattern, re.IGNORECASE)))
    assert sig.pattern.search(text)
    assert sig.possible(text.lower()), (sig.id, text)


def test_needles_are_conservative() -> None:
    assert needles(r"abcd?efgh") == ("efgh",)  # "d" may be absent
    assert needles(r"4\.7\.28\b|Unsolicited") == ("4.7.28", "unsolicited")
    assert needles(r"abc+defg") == ("defg",)  # "c" may repeat: "abcc" has no "abcd"
    assert needles(r"ab+cd") is None  # no run of 3
    assert needles(r"x(?:longer)?y") is None
    assert needles(r"\bRBL\b|(?:a|b)") is None
    assert needles(r"(?i)abc") is None


def test_a_site_file_adds_and_replaces(tmp_path: Path) -> None:
    extra = tmp_path / "site-signatures.toml"
    extra.write_text(
        """
[[provider]]
id = "uni-x"
name = "University X"
hosts = ['\\.uni-x\\.example$']

[[signature]]
id = "uni-x-greylist-forever"
provider = "uni-x"
kind = "throttle"
pattern = 'Greylisted for ever'
meaning = "University X greylists us again and again."

[[signature]]
id = "blocklist-spamcop"
provider = "*"
kind = "blocklist"
pattern = 'spamcop\\.net|bl\\.spamcop'
meaning = "replaced"
""",
        encoding="utf-8",
    )
    sigs = load_signatures([extra])
    assert sigs.provider_of("mx1.uni-x.example") == "uni-x"
    assert sigs.match("uni-x", "450 4.7.1 Greylisted for ever").id == "uni-x-greylist-forever"  # type: ignore[union-attr]
    assert sigs.by_id()["blocklist-spamcop"].meaning == "replaced"
    assert len(sigs.signatures) == len(SIGS.signatures) + 1


HEAD = "[[signature]]\nid = 'x'\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + "provider = '*'\nkind = 'nope'\npattern = 'a'\nmeaning = 'm'\n",
            "kind must be one of",
        ),
        (
            HEAD + "provider = '*'\nkind = 'block'\npattern = '(a'\nmeaning = 'm'\n",
            "not a valid regular expression",
        ),
        (
            HEAD + "provider = 'nobody'\nkind = 'block'\npattern = 'a'\nmeaning = 'm'\n",
            "provider 'nobody' is not defined",
        ),
        (
            HEAD + "provider = '*'\nkind = 'block'\npattern = '(?P<n>a)'\nmeaning = 'm'\n",
            "named groups",
        ),
        (HEAD + "provider = '*'\nkind = 'block'\npattern = 'a'\n", "'meaning'"),
        ("[[rule]]\n", "unknown table"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_signature_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(SignatureError, match=re.escape(message)) as info:
        load_signatures([bad])
    assert info.value.exit_status == 3
    assert str(bad) in info.value.message or "signature" in info.value.message
