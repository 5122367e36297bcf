"""The SQL directory: any database SQLAlchemy reaches with an async driver.

The operator's query runs with the address as a bound parameter (``:address``, plus
``:localpart`` and ``:domain``), never formatted into the SQL text, so no address can change
what the query does. The query returns a ``login`` column and optionally ``display_name`` and
``enabled``; more than one row counts as unknown (and is logged), like in LDAP.

The optional ``login_query`` is the reverse look-up (login → accounts) for the operator
console, ``:login`` bound the same way; without it :meth:`SqlDirectory.by_login` says so.

Connections come from SQLAlchemy's pool (``pool_pre_ping`` drops connections that died with a
database restart), and every query runs under ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from mailwarden.address import Address
from mailwarden.directory.base import MAX_BY_LOGIN, Account, LoginEntry, NoLoginSearch
from mailwarden.directory.config import SqlConfig
from mailwarden.errors import ConfigError, DirectoryError

log = logging.getLogger("mailwarden.directory.sql")

MAX_VALUE = 1024
_TRUE = {"1", "t", "true", "y", "yes", "on", "active", "enabled"}


def _flag(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool | int):
        return bool(value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().lower() in _TRUE


def _clip(value: object) -> str | None:
    if value is None:
        return None
    return str(value)[:MAX_VALUE]


def make_engine(url: str, password: str | None, pool_size: int, timeout: float) -> AsyncEngine:
    """An engine for ``url`` with the password (from file or environment) filled in."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if password is not None:
            parsed = parsed.set(password=password)
        options: dict[str, Any] = {"pool_pre_ping": True}
        if not parsed.drivername.startswith("sqlite"):
            options.update(pool_size=pool_size, max_overflow=0, pool_timeout=timeout)
        if parsed.drivername == "postgresql+asyncpg":
            options["connect_args"] = {"timeout": timeout, "command_timeout": timeout}
        return create_async_engine(parsed, **options)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"directory.url: {exc}") from None


class SqlDirectory:
    """Address → account with one parameterised SELECT."""

    name = "sql"

    def __init__(self, config: SqlConfig, password: str | None) -> None:
        self.config = config
        self._password = password
        self._engine: AsyncEngine | None = None
        self._query: TextClause = text(config.query)
        self._login_query = text(config.login_query) if config.login_query else None

    def __repr__(self) -> str:  # never show the password
        return f"SqlDirectory(url={self.config.url!r})"

    def _get_engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = make_engine(
                self.config.url, self._password, self.config.pool_size, self.config.timeout
            )
        return self._engine

    async def rows(self, address: Address) -> list[dict[str, object]]:
        """The rows the query returns for ``address`` (at most two are fetched)."""
        params = {
            "address": address.key,
            "localpart": address.localpart.lower(),
            "domain": address.domain,
        }
        wanted = {k: v for k, v in params.items() if f":{k}" in self.config.query}
        return await self._fetch(self._query, wanted, 2)

    async def _fetch(
        self, query: TextClause, params: dict[str, str], limit: int
    ) -> list[dict[str, object]]:
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self._get_engine().connect() as conn:
                    result = await conn.execute(query, params)
                    return [dict(row._mapping) for row in result.fetchmany(limit)]
        except TimeoutError:
            raise DirectoryError(
                f"SQL directory: no answer within {self.config.timeout} s"
            ) from None
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            raise DirectoryError(f"SQL directory: query failed: {reason}") from None
        except OSError as exc:
            raise DirectoryError(f"SQL directory: cannot connect: {exc.strerror or exc}") from None

    def account(self, address: Address, rows: list[dict[str, object]]) -> Account | None:
        """Pure: the account for ``rows`` (exactly one), else None."""
        if len(rows) != 1:
            if rows:
                log.warning(
                    "the SQL query returns more than one row for %s: treated as unknown",
                    address.key,
                )
            return None
        row = rows[0]
        login = _clip(row.get("login"))
        if not login:
            if "login" not in row:
                raise DirectoryError("SQL directory: the query returns no column named 'login'")
            return None
        return Account(
            address=address.key,
            login=login,
            display_name=_clip(row.get("display_name")),
            enabled=_flag(row.get("enabled")),
        )

    async def lookup(self, address: Address) -> Account | None:
        return self.account(address, await self.rows(address))

    async def by_login(self, login: str) -> list[LoginEntry]:
        """The rows of ``login_query`` for ``login`` (aliases are not listed)."""
        if self._login_query is None:
            raise NoLoginSearch(
                "the SQL directory cannot search by login: set [directory] login_query "
                "(docs/directories.md)"
            )
        rows = await self._fetch(self._login_query, {"login": login}, MAX_BY_LOGIN)
        if rows and "address" not in rows[0]:
            raise DirectoryError("SQL directory: login_query returns no column named 'address'")
        found = [
            LoginEntry(
                Account(
                    address=str(_clip(row["address"])),
                    login=_clip(row.get("login")) or login,
                    display_name=_clip(row.get("display_name")),
                    enabled=_flag(row.get("enabled")),
                )
            )
            for row in rows
            if row.get("address")
        ]
        return sorted(found, key=lambda e: e.account.address)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
