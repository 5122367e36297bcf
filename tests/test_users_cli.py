"""``mailwarden users``, driven as a subprocess against a real SQLite file.

What an operator relies on: an import is all or nothing and a bad row names its line; every
address of an account (primary or alias) leads to that account; the domain of an address is
compared case-insensitively and in its IDNA form; errors are one line and exit status 2, an
unknown address exit status 1 (as in ``directory check``); every bad row of a CSV is reported in
one run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.address import parse_address
from mailwarden.cli import main
from mailwarden.directory.embedded import EmbeddedDirectory, read_users_csv
from mailwarden.errors import InputError
from tests.fixtures.paths import EXAMPLES

HEADER = "address,login,display_name,aliases,enabled\n"
GOOD = (
    HEADER
    + "fred@example.edu,fred01,Fred Example,fred.example@example.edu;f@uni-example.de,yes\n"
    + "anna@Example.EDU,anna02,Anna,,yes\n"
    + "old@example.edu,old03,Old Account,,no\n"
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The example site with an empty embedded directory in ``tmp_path``."""
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    target = tmp_path / "site.toml"
    target.write_text(
        text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"'),
        encoding="utf-8",
    )
    return target


class Result:
    """What one ``mailwarden`` run printed and returned."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


_capture: pytest.CaptureFixture[str] | None = None


@pytest.fixture(autouse=True)
def _cli_capture(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    global _capture
    _capture = capsys
    yield
    _capture = None


def users(site: Path, *args: str) -> Result:
    """Run ``mailwarden users`` in-process (the same ``main`` the console script calls; a
    subprocess per call would cost half a second each). ``test_subprocess_*`` below run the
    real executable for exit status and stream checks."""
    assert _capture is not None
    _capture.readouterr()
    try:
        status = main(["users", "--config", str(site), *args])
    except Exception as exc:  # a traceback would reach the user: fail loudly
        pytest.fail(f"mailwarden users {' '.join(args)} raised {exc!r}")
    out, err = _capture.readouterr()
    return Result(status, out, err)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mailwarden", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def listing(site: Path) -> list[dict[str, Any]]:
    result = users(site, "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def show(site: Path, address: str) -> dict[str, Any] | None:
    result = users(site, "show", address, "--format", "json")
    if result.returncode == 1:
        assert "no such address" in result.stderr
        assert result.stdout == ""
        return None
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def import_ok(site: Path, text: str) -> None:
    result = users(site, "import", str(write(site.parent / "ok.csv", text)))
    assert result.returncode == 0, result.stderr


def test_import_then_show_and_list(site: Path) -> None:
    import_ok(site, GOOD)
    assert [u["address"] for u in listing(site)] == [
        "anna@example.edu",
        "fred@example.edu",
        "old@example.edu",
    ]
    fred = show(site, "fred@example.edu")
    assert fred == {
        "address": "fred@example.edu",
        "login": "fred01",
        "display_name": "Fred Example",
        "aliases": ["f@uni-example.de", "fred.example@example.edu"],
        "enabled": True,
    }
    old = show(site, "old@example.edu")
    assert old is not None
    assert old["enabled"] is False


def test_aliases_resolve_to_the_same_account(site: Path) -> None:
    import_ok(site, GOOD)
    fred = show(site, "fred@example.edu")
    for alias in ("fred.example@example.edu", "F@UNI-EXAMPLE.DE", "Fred.Example@example.edu"):
        assert show(site, alias) == fred


def test_domain_is_case_insensitive_and_idn_normalised(site: Path) -> None:
    result = users(site, "add", "jürgen@Bücher.Example", "--login", "jm", "--alias", "j@MÜLLER.de")
    assert result.returncode == 0, result.stderr
    by_unicode = show(site, "jürgen@bücher.example")
    by_a_label = show(site, "jürgen@xn--bcher-kva.example")
    assert by_unicode is not None
    assert by_unicode == by_a_label
    assert by_unicode["address"] == "jürgen@xn--bcher-kva.example"
    assert show(site, "j@xn--mller-kva.de") == by_unicode
    assert show(site, "J@Müller.DE") == by_unicode


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("bad-address,x,,,yes", "ok.csv:4: 'bad-address' is not a valid address"),
        ("new@example.edu,,,,yes", "ok.csv:4: column 'login' is empty"),
        ("new@example.edu,n,,,maybe", "ok.csv:4: column 'enabled' must be yes/no"),
        ("new@example.edu,n,,,yes,extra", "ok.csv:4: expected 5 columns, found 6"),
        ("new@example.edu,n,,fred@example.edu,yes", "ok.csv:4: address 'fred@example.edu' already"),
        ("new@example.edu,n,,not an address,yes", "ok.csv:4: 'not' is not a valid address"),
    ],
)
def test_bad_row_names_its_line_and_imports_nothing(site: Path, row: str, expected: str) -> None:
    import_ok(site, GOOD)
    before = listing(site)
    # A good row before the bad one proves the whole file is one transaction.
    text = HEADER + "first@example.edu,first,,,yes\nsecond@example.edu,second,,,yes\n" + row + "\n"
    csv = write(site.parent / "ok.csv", text)
    result = users(site, "import", str(csv))
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert listing(site) == before
    assert show(site, "first@example.edu") is None


def test_conflict_with_existing_account_names_the_line(site: Path) -> None:
    import_ok(site, GOOD)
    before = listing(site)
    text = HEADER + "x@example.edu,x,,,yes\ny@example.edu,y,,anna@example.edu,yes\n"
    result = users(site, "import", str(write(site.parent / "clash.csv", text)))
    assert result.returncode == 2
    assert "clash.csv:3: address 'anna@example.edu' already belongs to 'anna@example.edu'" in (
        result.stderr
    )
    assert listing(site) == before


def test_import_updates_and_replace_removes_the_rest(site: Path) -> None:
    import_ok(site, GOOD)
    import_ok(site, HEADER + "anna@example.edu,anna-new,Anna N.,,yes\n")
    anna = show(site, "anna@example.edu")
    assert anna is not None
    assert anna["login"] == "anna-new"
    assert len(listing(site)) == 3
    csv = write(site.parent / "only.csv", HEADER + "anna@example.edu,anna-new,Anna N.,,yes\n")
    result = users(site, "import", "--replace", str(csv))
    assert result.returncode == 0, result.stderr
    assert [u["address"] for u in listing(site)] == ["anna@example.edu"]


def test_empty_and_headerless_files(site: Path) -> None:
    result = users(site, "import", str(write(site.parent / "empty.csv", "")))
    assert result.returncode == 2
    assert "empty.csv: file is empty" in result.stderr
    result = users(site, "import", str(write(site.parent / "nohead.csv", "a@example.edu,a\n")))
    assert result.returncode == 2
    assert "nohead.csv:1: header must name the columns address,login" in result.stderr


def test_add_remove(site: Path) -> None:
    result = users(site, "add", "kim@example.edu", "--login", "kim", "--name", "Kim", "--disabled")
    assert result.returncode == 0, result.stderr
    kim = show(site, "kim@example.edu")
    assert kim is not None
    assert kim["enabled"] is False
    assert kim["display_name"] == "Kim"
    again = users(site, "add", "KIM@example.edu", "--login", "kim2")
    assert again.returncode == 2
    assert "already exists" in again.stderr
    removed = users(site, "remove", "kim@example.edu")
    assert removed.returncode == 0, removed.stderr
    assert show(site, "kim@example.edu") is None
    missing = users(site, "remove", "kim@example.edu")
    assert missing.returncode == 1
    assert "no such address" in missing.stderr


def test_remove_by_alias_removes_the_whole_account(site: Path) -> None:
    import_ok(site, GOOD)
    result = users(site, "remove", "f@uni-example.de")
    assert result.returncode == 0, result.stderr
    assert "fred@example.edu" in result.stdout
    for address in ("fred@example.edu", "fred.example@example.edu", "f@uni-example.de"):
        assert show(site, address) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["x@example.edu", "--login", "x", "--alias", "x@example.edu"], "listed twice"),
        (["x@example.edu", "--login", "x", "--alias", "fred@example.edu"], "already belongs"),
        (["x@example.edu", "--login", "a\nb"], "control characters"),
        (["x@example.edu", "--login", " "], "must not be empty"),
        (["not-an-address", "--login", "x"], "is not a valid address"),
    ],
)
def test_add_refuses_bad_input_without_traceback(
    site: Path, args: list[str], expected: str
) -> None:
    import_ok(site, GOOD)
    before = listing(site)
    result = users(site, "add", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert listing(site) == before


def test_directory_lookup_sees_every_address_of_an_account(site: Path) -> None:
    """The server's read side agrees with the CLI: aliases, case, IDN, disabled flag."""
    import_ok(site, GOOD)

    async def lookups() -> list[tuple[str, str, bool] | None]:
        directory = EmbeddedDirectory(site.parent / "users.sqlite")
        found = []
        for text in (
            "fred@example.edu",
            "FRED.EXAMPLE@EXAMPLE.EDU",
            "f@uni-example.de",
            "old@example.edu",
            "nobody@example.edu",
        ):
            account = await directory.lookup(parse_address(text))
            found.append(
                None if account is None else (account.address, account.login, account.enabled)
            )
        await directory.close()
        return found

    fred = ("fred@example.edu", "fred01", True)
    assert asyncio.run(lookups()) == [fred, fred, fred, ("old@example.edu", "old03", False), None]


def test_subprocess_bad_import_exits_2_with_one_line_and_imports_nothing(site: Path) -> None:
    import_ok(site, GOOD)
    csv = write(site.parent / "bad.csv", HEADER + "ok@example.edu,ok,,,yes\nbroken,x,,,yes\n")
    result = run_cli("users", "--config", str(site), "import", str(csv))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"mailwarden: error [INPUT-INVALID]: {csv}:3: 'broken' is not a valid address: "
        "address must have the form local-part@domain"
    )
    listed = run_cli("users", "--config", str(site), "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [u["address"] for u in json.loads(listed.stdout)] == [
        "anna@example.edu",
        "fred@example.edu",
        "old@example.edu",
    ]


def test_subprocess_help_teaches_with_examples() -> None:
    result = run_cli("users", "--help")
    assert result.returncode == 0
    assert "import users.csv" in result.stdout
    assert "CSV header" in result.stdout


# -- the CSV parser as a property --------------------------------------------------------------

_cells = st.one_of(
    st.sampled_from(["a@example.edu", "b@EXAMPLE.edu", "x", "", "yes", "no", "a;b", '"q"']),
    st.text(max_size=30),
)
_rows = st.lists(st.lists(_cells, min_size=0, max_size=6), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=400),
        _rows.map(lambda rows: HEADER + "\n".join(",".join(r) for r in rows)),
    )
)
def test_csv_parser_raises_only_input_errors_that_name_the_file(text: str) -> None:
    try:
        numbered = read_users_csv(text, "users.csv")
    except InputError as exc:
        message = exc.message
    else:
        lines = [line for line, _record in numbered]
        assert lines == sorted(set(lines))
        for _line, record in numbered:
            assert record.login == record.login.strip() != ""
            assert record.address == parse_address(record.address).key
        return
    for line in message.split("\n"):  # one line per bad row, each naming the file
        assert line.startswith("users.csv")


def test_values_that_look_like_markup_are_shown_verbatim(site: Path) -> None:
    """Terminal output is rich text: a login of "[/]" must print, not crash the command."""
    result = users(site, "add", "br@example.edu", "--login", "[/]", "--name", "[bold]x[/x]")
    assert result.returncode == 0, result.stderr
    shown = users(site, "show", "br@example.edu")
    assert shown.returncode == 0, shown.stderr
    assert "[/]" in shown.stdout
    assert "[bold]x[/x]" in shown.stdout
    listed = users(site, "list")
    assert listed.returncode == 0
    assert "[/]" in listed.stdout


def test_addresses_in_unserved_domains_are_flagged(site: Path) -> None:
    text = HEADER + "a@example.edu,a,,a@exmaple.edu,yes\nb@nowhere.example,b,,,yes\n"
    result = users(site, "import", str(write(site.parent / "typo.csv", text)))
    assert result.returncode == 0, result.stderr
    assert "warning: 2 addresses in domains the site does not serve" in result.stderr
    assert "a@exmaple.edu, b@nowhere.example" in result.stderr
    clean = users(site, "add", "c@uni-example.de", "--login", "c")  # an alias domain: served
    assert clean.returncode == 0
    assert "warning" not in clean.stderr


# -- every bad row in one run --------------------------------------------------------------------


def test_every_bad_row_is_reported_in_one_run_and_nothing_is_imported(site: Path) -> None:
    """Three bad rows of different kinds (parse, duplicate, conflict with the directory), with
    good rows between them: one run names all three lines, then a count; nothing is written."""
    import_ok(site, GOOD)
    before = listing(site)
    text = (
        HEADER
        + "first@example.edu,first,,,yes\n"  # 2: good
        + "broken,x,,,yes\n"  # 3: not an address
        + "second@example.edu,second,,,yes\n"  # 4: good
        + "third@example.edu,,,,yes\n"  # 5: empty login
        + "fourth@example.edu,fourth,,anna@example.edu,yes\n"  # 6: anna has an account
        + "fifth@example.edu,fifth,,first@example.edu,maybe\n"  # 7: bad flag
    )
    csv = write(site.parent / "many.csv", text)
    result = users(site, "import", str(csv))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"mailwarden: error [INPUT-INVALID]: {csv}:3: 'broken'")
    assert lines[1] == f"{csv}:5: column 'login' is empty"
    assert lines[2] == f"{csv}:6: address 'anna@example.edu' already belongs to 'anna@example.edu'"
    assert lines[3].startswith(f"{csv}:7: column 'enabled' must be yes/no")
    assert lines[4] == f"{csv}: 4 bad rows; nothing imported"
    assert len(lines) == 5
    assert listing(site) == before
    assert show(site, "first@example.edu") is None


def test_a_file_broken_throughout_is_listed_up_to_a_limit(site: Path) -> None:
    rows = "".join(f"user{n}.example.edu,u{n},,,yes\n" for n in range(250))
    result = users(site, "import", str(write(site.parent / "semi.csv", HEADER + rows)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 101
    assert lines[-1].endswith("semi.csv: 250 bad rows (the first 100 are listed); nothing imported")


def test_one_account_is_one_account(site: Path) -> None:
    """Plurals: the summary line is read by people."""
    one = write(site.parent / "one.csv", HEADER + "a@example.edu,a,,,yes\n")
    result = users(site, "import", str(one))
    assert result.returncode == 0, result.stderr
    assert "imported 1 account from" in result.stdout
    assert users(site, "list").stdout.strip().endswith("\n1 account")
    two = HEADER + "b@example.edu,b,,,yes\nc@example.edu,c,,,yes\n"
    two_result = users(site, "import", str(write(site.parent / "two.csv", two)))
    assert "imported 2 accounts from" in two_result.stdout


def test_unknown_address_is_status_1_in_show_remove_and_directory_check(site: Path) -> None:
    """One meaning, one status: an address nobody has is a finding (1), not an error (2)."""
    import_ok(site, GOOD)
    assert users(site, "show", "nobody@example.edu").returncode == 1
    assert users(site, "remove", "nobody@example.edu").returncode == 1
    assert _capture is not None
    _capture.readouterr()
    assert main(["directory", "check", "nobody@example.edu", "--config", str(site)]) == 1
    assert main(["directory", "check", "fred@example.edu", "--config", str(site)]) == 0
    assert users(site, "show", "not-an-address").returncode == 2  # bad input stays 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["ok", "bad-address", "no-login", "bad-flag", "columns"]), max_size=9)
)
def test_the_report_names_exactly_the_bad_lines(kinds: list[str]) -> None:
    """Property: whatever mix of good and bad rows, the bad lines are exactly the ones named."""
    make = {
        "ok": "u{n}@example.edu,u{n},,,yes",
        "bad-address": "u{n}.example.edu,u{n},,,yes",
        "no-login": "u{n}@example.edu,,,,yes",
        "bad-flag": "u{n}@example.edu,u{n},,,perhaps",
        "columns": "u{n}@example.edu,u{n}",
    }
    text = HEADER + "".join(make[k].format(n=n) + "\n" for n, k in enumerate(kinds))
    bad = {n + 2 for n, k in enumerate(kinds) if k != "ok"}
    if not bad:
        assert len(read_users_csv(text, "u.csv")) == len(kinds)
        return
    with pytest.raises(InputError) as raised:
        read_users_csv(text, "u.csv")
    lines = raised.value.message.split("\n")
    assert {int(line.split(":")[1]) for line in lines if line.count(":") >= 2} == bad
    assert len(lines) == len(bad) + (len(bad) > 1)  # the count line when more than one
