"""The embedded directory: one SQLite file, no server to run.

Two tables: ``accounts`` (primary address, login, display name, enabled) and ``addresses``
(every address that reaches an account, the primary one included, in lookup form). A lookup is
one indexed join, a few microseconds, so the server calls it directly on the event loop rather
than paying for a thread hop.

:class:`UserStore` is the management side used by ``mailwarden users``: every change is one
transaction, so a bad CSV row leaves the database exactly as it was.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailwarden.address import Address, AddressError, parse_address
from mailwarden.directory.base import MAX_BY_LOGIN, Account, LoginEntry
from mailwarden.errors import DirectoryError, InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    login TEXT NOT NULL,
    display_name TEXT,
    enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS addresses (
    address TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE
) WITHOUT ROWID;
"""

_LOOKUP = (
    "SELECT a.address, a.login, a.display_name, a.enabled FROM addresses x "
    "JOIN accounts a ON a.id = x.account_id WHERE x.address = ?"
)
# Logins compare as IMAP servers usually do, ignoring ASCII case ("JDoe" finds "jdoe"). No
# index: a helpdesk search scans the table (milliseconds for 100 000 accounts), and the
# autoconfig server's schema stays as it is.
_BY_LOGIN = (
    "SELECT address, login, display_name, enabled, id FROM accounts "
    "WHERE login = ? COLLATE NOCASE ORDER BY address LIMIT ?"
)
_ALIASES = "SELECT address FROM addresses WHERE account_id = ? AND address != ? ORDER BY address"

MAX_CSV_BYTES = 64 * 1024 * 1024
MAX_FIELD = 256
CSV_COLUMNS = ("address", "login", "display_name", "aliases", "enabled")


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if not create and not path.exists():
        raise DirectoryError(
            f"{path}: embedded directory does not exist yet; "
            "create it with 'mailwarden users import' or 'mailwarden users add'"
        )
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.executescript(SCHEMA)
    except sqlite3.Error as exc:
        raise DirectoryError(f"{path}: cannot open embedded directory: {exc}") from None
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot create embedded directory: {exc.strerror}") from None
    return conn


def _row_to_account(row: tuple[str, str, str | None, int]) -> Account:
    return Account(address=row[0], login=row[1], display_name=row[2], enabled=bool(row[3]))


class EmbeddedDirectory:
    """Read side, used by the server."""

    name = "embedded"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        # Never create the file here: a mistyped path must show as a directory error (log,
        # metric), not as an empty directory that quietly answers every address as unknown.
        if self._conn is None:
            self._conn = _connect(self.path, create=False)
        return self._conn

    async def lookup(self, address: Address) -> Account | None:
        try:
            row = self._connection().execute(_LOOKUP, (address.key,)).fetchone()
        except sqlite3.Error as exc:
            raise DirectoryError(f"{self.path}: lookup failed: {exc}") from None
        return _row_to_account(row) if row else None

    async def by_login(self, login: str) -> list[LoginEntry]:
        """The accounts whose login is ``login`` (ASCII case ignored), with their aliases."""
        try:
            conn = self._connection()
            rows = conn.execute(_BY_LOGIN, (login, MAX_BY_LOGIN)).fetchall()
            return [
                LoginEntry(
                    _row_to_account(row[:4]),
                    tuple(a for (a,) in conn.execute(_ALIASES, (row[4], row[0]))),
                )
                for row in rows
            ]
        except sqlite3.Error as exc:
            raise DirectoryError(f"{self.path}: search by login failed: {exc}") from None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One account with all its addresses, as the CLI shows and imports it."""

    address: str
    login: str
    display_name: str | None
    aliases: tuple[str, ...]
    enabled: bool = True


def _key(text: str, where: str) -> str:
    try:
        return parse_address(text).key
    except AddressError as exc:
        raise InputError(f"{where}: {text!r} is not a valid address: {exc}") from None


def _clean_field(value: str, name: str, where: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise InputError(f"{where}: column '{name}' is empty")
    if len(value) > MAX_FIELD:
        raise InputError(f"{where}: column '{name}' is longer than {MAX_FIELD} characters")
    if any(ord(c) < 32 for c in value):
        raise InputError(f"{where}: column '{name}' contains control characters")
    return value


_TRUE = {"1", "yes", "true", "on", "enabled"}
_FALSE = {"0", "no", "false", "off", "disabled"}


MAX_PROBLEMS_SHOWN = 100
"""Bad rows listed one by one; a file broken throughout (wrong delimiter, wrong file) gets a
count after these rather than a million lines."""


def parse_users_csv(text: str, source: str) -> list[UserRecord]:
    """Parse a users CSV (header: address,login[,display_name][,aliases][,enabled]).

    ``aliases`` holds further addresses separated by spaces or semicolons. Every problem is
    reported as ``FILE:LINE: …``, all of them in one error.
    """
    return [record for _line, record in read_users_csv(text, source)]


def read_users_csv(text: str, source: str) -> list[tuple[int, UserRecord]]:
    """:func:`parse_users_csv` with the line each record starts on, so that conflicts found
    later (an address that belongs to another account) can still name the line."""
    records, problems = scan_users_csv(text, source)
    if problems:
        raise InputError(problem_report(problems, source))
    return records


def problem_report(problems: Sequence[tuple[int, str]], source: str) -> str:
    """Every bad row, in file order, one per line, then how many (when more than one).

    One error rather than the first one: an admin fixing an export from another system wants
    the whole list in one run, not one run per row.
    """
    ordered = [message for _line, message in sorted(problems, key=lambda p: p[0])]
    if len(ordered) == 1:
        return ordered[0]
    shown = ordered[:MAX_PROBLEMS_SHOWN]
    more = len(ordered) - len(shown)
    tail = f" (the first {len(shown)} are listed)" if more else ""
    return "\n".join([*shown, f"{source}: {len(ordered)} bad rows{tail}; nothing imported"])


def _row(header: list[str], row: list[str], where: str) -> tuple[UserRecord, tuple[str, ...]]:
    """One data row → its record and all its addresses; :class:`InputError` names ``where``."""
    if len(row) != len(header):
        raise InputError(f"{where}: expected {len(header)} columns, found {len(row)}")
    values = dict(zip(header, row, strict=True))
    address = _key(_clean_field(values["address"], "address", where, required=True), where)
    login = _clean_field(values["login"], "login", where, required=True)
    display = (
        _clean_field(values.get("display_name", ""), "display_name", where, required=False) or None
    )
    alias_text = _clean_field(values.get("aliases", ""), "aliases", where, required=False)
    aliases = tuple(_key(a, where) for a in alias_text.replace(";", " ").split() if a)
    flag = values.get("enabled", "1").strip().lower() or "1"
    if flag not in _TRUE | _FALSE:
        raise InputError(f"{where}: column 'enabled' must be yes/no (got {flag!r})")
    return UserRecord(address, login, display, aliases, flag in _TRUE), (address, *aliases)


def scan_users_csv(
    text: str, source: str
) -> tuple[list[tuple[int, UserRecord]], list[tuple[int, str]]]:
    """The good records (with their lines) and every bad row (line, ``FILE:LINE: what``).

    A file that cannot be read at all (too large, empty, no usable header) raises at once.
    """
    if len(text) > MAX_CSV_BYTES:
        raise InputError(f"{source}: larger than 64 MiB")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{source}: file is empty (expected a header line)") from None
    except csv.Error as exc:
        raise InputError(f"{source}:1: {exc}") from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown or "address" not in header or "login" not in header:
        raise InputError(
            f"{source}:1: header must name the columns address,login and optionally "
            f"display_name,aliases,enabled (got {','.join(header)!r})"
        )
    records: list[tuple[int, UserRecord]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    while True:
        before = reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a NUL byte: this row is bad, the next may be fine
            problems.append((reader.line_num, f"{source}:{reader.line_num}: {exc}"))
            if reader.line_num == before:  # the reader cannot move on: stop, don't spin
                break
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        try:
            record, addresses = _row(header, row, f"{source}:{line}")
            for addr in addresses:
                if addr in seen:
                    raise InputError(
                        f"{source}:{line}: address {addr!r} already appears on line {seen[addr]}"
                    )
        except InputError as exc:
            problems.append((line, exc.message))
            continue
        for addr in addresses:
            seen[addr] = line
        records.append((line, record))
    return records, problems


def check_record(record: UserRecord, where: str) -> None:
    """The rules every account obeys however it arrives (CSV or ``users add``)."""
    for name, value in (("login", record.login), ("display_name", record.display_name or "")):
        if value != _clean_field(value, name, where, required=name == "login"):
            raise InputError(f"{where}: column '{name}' has leading or trailing white space")
    addresses = (record.address, *record.aliases)
    for index, addr in enumerate(addresses):
        if addr in addresses[:index]:
            raise InputError(f"{where}: address {addr!r} is listed twice for this account")


class UserStore:
    """Write side of the embedded directory (the ``mailwarden users`` commands)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = _connect(path, create=True)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DirectoryError(f"{self.path}: cannot write: {exc}") from None
        try:
            yield conn
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise DirectoryError(f"{self.path}: change not saved: {exc}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _owner(self, conn: sqlite3.Connection, address: str) -> str | None:
        row = conn.execute(
            "SELECT a.address FROM addresses x JOIN accounts a ON a.id = x.account_id "
            "WHERE x.address = ?",
            (address,),
        ).fetchone()
        return row[0] if row else None

    def _put(self, conn: sqlite3.Connection, record: UserRecord, where: str) -> None:
        check_record(record, where)
        for addr in (record.address, *record.aliases):
            owner = self._owner(conn, addr)
            if owner is not None and owner != record.address:
                raise InputError(f"{where}: address {addr!r} already belongs to {owner!r}")
        conn.execute("DELETE FROM accounts WHERE address = ?", (record.address,))
        cursor = conn.execute(
            "INSERT INTO accounts (address, login, display_name, enabled) VALUES (?, ?, ?, ?)",
            (record.address, record.login, record.display_name, int(record.enabled)),
        )
        account_id = cursor.lastrowid
        conn.executemany(
            "INSERT INTO addresses (address, account_id) VALUES (?, ?)",
            [(addr, account_id) for addr in (record.address, *record.aliases)],
        )

    def import_records(
        self,
        records: Iterable[UserRecord],
        *,
        source: str,
        replace: bool = False,
        lines: Sequence[int] | None = None,
        problems: Sequence[tuple[int, str]] = (),
    ) -> int:
        """Add or update ``records`` in one transaction; ``replace`` drops all others first.

        ``lines`` (from :func:`read_users_csv`) lets a conflict name its line in ``source``.
        Every conflict is collected, together with ``problems`` found earlier (the bad rows of
        :func:`scan_users_csv`), and if there is any, one :class:`InputError` lists them all
        and nothing is written: the admin sees every bad row in one run.
        """
        count = 0
        found = list(problems)
        with self._transaction() as conn:
            if replace:
                conn.execute("DELETE FROM addresses")
                conn.execute("DELETE FROM accounts")
            for count, record in enumerate(records, start=1):
                line = lines[count - 1] if lines is not None and count <= len(lines) else 0
                where = (
                    f"{source}:{line}" if line else f"{source} (record {count}, {record.address})"
                )
                try:
                    self._put(conn, record, where)
                except InputError as exc:
                    found.append((line, exc.message))
            if found:
                raise InputError(problem_report(found, source))  # rolls the transaction back
        return count

    def add(self, record: UserRecord) -> None:
        with self._transaction() as conn:
            if self._owner(conn, record.address) is not None:
                raise InputError(f"{record.address}: already exists (use 'users import' to update)")
            self._put(conn, record, record.address)

    def remove(self, address: str) -> str:
        """Remove the account owning ``address``; returns its primary address."""
        key = _key(address, "address")
        with self._transaction() as conn:
            owner = self._owner(conn, key)
            if owner is None:
                raise InputError(f"{address}: no such address in the directory")
            conn.execute("DELETE FROM accounts WHERE address = ?", (owner,))
        return owner

    def get(self, address: str) -> UserRecord | None:
        key = _key(address, "address")
        owner = self._owner(self._conn, key)
        return None if owner is None else self._record(owner)

    def _record(self, primary: str) -> UserRecord:
        row = self._conn.execute(
            "SELECT id, address, login, display_name, enabled FROM accounts WHERE address = ?",
            (primary,),
        ).fetchone()
        aliases = tuple(
            r[0]
            for r in self._conn.execute(
                "SELECT address FROM addresses WHERE account_id = ? AND address != ? "
                "ORDER BY address",
                (row[0], primary),
            )
        )
        return UserRecord(row[1], row[2], row[3], aliases, bool(row[4]))

    def all(self) -> list[UserRecord]:
        rows = self._conn.execute("SELECT address FROM accounts ORDER BY address").fetchall()
        return [self._record(r[0]) for r in rows]

    def count(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM accounts").fetchone()
        return int(row[0])
