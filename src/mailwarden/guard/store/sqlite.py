"""SQLite-backed state for one MTA: memory speed, and restarts keep locks, holds and baselines.

Decisions run on the in-memory state (:class:`MemoryStore`); what must survive is written
through. A lock, a hold or a history event is committed (WAL, ``synchronous=FULL``) before the
verdict goes back to the MTA, so ``kill -9`` at any moment loses no lock. Baselines and known
networks are checkpointed every minute and on shutdown: losing a minute of learning is harmless.
The CLI (``mailwarden guard unlock``) writes to the same file; the server notices other
connections' commits through ``PRAGMA data_version`` (one cheap query per decision) and reloads
the locks.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mailwarden.guard.detector import Detector, Observation, Verdict, forgive
from mailwarden.guard.store.base import MAX_HISTORY, Event, HoldInfo, LockInfo, StoreError
from mailwarden.guard.store.memory import MemoryStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS locks (
  user TEXT PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL, by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
  queue_id TEXT PRIMARY KEY, user TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL,
  instance TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, user TEXT NOT NULL, time REAL NOT NULL, action TEXT NOT NULL,
  reason TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user, id);
CREATE TABLE IF NOT EXISTS baselines (
  user TEXT PRIMARY KEY, baseline_hour REAL NOT NULL, hour_index INTEGER NOT NULL,
  hour_ext INTEGER NOT NULL, flagged_until REAL NOT NULL, networks TEXT NOT NULL,
  rcpt_avg REAL NOT NULL DEFAULT 0, rcpt_seen INTEGER NOT NULL DEFAULT 0,
  hour_profile TEXT NOT NULL DEFAULT '', profile_since INTEGER NOT NULL DEFAULT -1
);
"""
ADDED_COLUMNS = {
    "baselines": {
        "hour_profile": "TEXT NOT NULL DEFAULT ''",
        "profile_since": "INTEGER NOT NULL DEFAULT -1",
    },
    "holds": {"instance": "TEXT NOT NULL DEFAULT ''"},
}
"""Columns newer than the first schema, added to an existing database on open."""


class SqliteStore(MemoryStore):
    name = "sqlite"

    def __init__(self, path: Path, lock_ttl: float = 0.0) -> None:
        super().__init__(lock_ttl)
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column, decl in columns.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the guard state database: {exc}") from None
        self._version = -1
        self._dirty: set[str] = set()
        self._load()

    # -- loading and syncing -------------------------------------------------------------

    def _load(self) -> None:
        try:
            rows = self._db.execute(
                "SELECT user, baseline_hour, hour_index, hour_ext, flagged_until, networks, "
                "rcpt_avg, rcpt_seen, hour_profile, profile_since FROM baselines "
                "ORDER BY hour_index"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read baselines: {exc}") from None
        for user, peak, index, ext, flagged, networks, rcpt_avg, rcpt_seen, profile, since in rows:
            state = self.state(user)
            state.baseline_hour, state.hour_index, state.hour_ext = peak, index, ext
            state.flagged_until = flagged
            state.rcpt_avg, state.rcpt_seen = rcpt_avg, rcpt_seen
            slots = json.loads(profile) if profile else []
            if len(slots) == 24:
                state.hour_profile = [float(x) for x in slots]
                state.profile_since = since
            nets: dict[str, list[float]] = json.loads(networks)
            state.networks = {n: v[0] for n, v in nets.items()}
            state.network_seen = {n: v[1] for n, v in nets.items()}
        self._sync()

    def _sync(self) -> None:
        """Reload locks and holds if another connection (the CLI) committed since last time."""
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            self._version = version
            locks = {
                row[0]: LockInfo(*row)
                for row in self._db.execute("SELECT user, reason, since, by FROM locks")
            }
            holds = {
                row[0]: HoldInfo(*row)
                for row in self._db.execute(
                    "SELECT queue_id, user, reason, since, instance FROM holds"
                )
            }
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        for user in set(self._locks) - set(locks):
            state = self.users.get(user)
            if state is not None:
                forgive(state)
        self._locks = locks
        for user, lock in locks.items():
            if user in self.users:
                self.users[user].locked = lock.reason
        self._holds = holds

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    # -- the decision path ---------------------------------------------------------------

    async def decide(self, obs: Observation, detector: Detector) -> Verdict:
        self._sync()
        self._dirty.add(obs.user)
        return self.decide_now(obs, detector)

    def _set_lock(self, info: LockInfo) -> None:
        self._write(
            "INSERT OR REPLACE INTO locks (user, reason, since, by) VALUES (?, ?, ?, ?)",
            (info.user, info.reason, info.since, info.by),
        )
        super()._set_lock(info)

    async def locked(self, user: str) -> str | None:
        self._sync()
        return await super().locked(user)

    def _drop_lock(self, user: str) -> None:
        self._write("DELETE FROM locks WHERE user = ?", (user,))
        super()._drop_lock(user)

    async def unlock(self, user: str) -> bool:
        self._sync()
        self._write("DELETE FROM locks WHERE user = ?", (user,))
        found = await super().unlock(user)
        self._dirty.add(user)
        return found

    async def locks(self) -> list[LockInfo]:
        self._sync()
        return await super().locks()

    async def add_hold(self, hold: HoldInfo) -> None:
        self._write(
            "INSERT OR REPLACE INTO holds (queue_id, user, reason, since, instance) "
            "VALUES (?, ?, ?, ?, ?)",
            (hold.queue_id, hold.user, hold.reason, hold.since, hold.instance),
        )
        await super().add_hold(hold)

    async def holds(self) -> list[HoldInfo]:
        self._sync()
        return await super().holds()

    async def drop_holds(self, key: str) -> list[HoldInfo]:
        self._sync()
        self._write("DELETE FROM holds WHERE queue_id = ? OR user = ?", (key, key))
        return await super().drop_holds(key)

    async def add_event(self, event: Event) -> None:
        self._write(
            "INSERT INTO events (user, time, action, reason, detail) VALUES (?, ?, ?, ?, ?)",
            (event.user, event.when, event.action, event.reason, json.dumps(event.detail)),
        )
        self._write(
            "DELETE FROM events WHERE user = ? AND id <= "
            "(SELECT id FROM events WHERE user = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (event.user, event.user, MAX_HISTORY),
        )

    async def history(self, user: str, limit: int = 50) -> list[Event]:
        try:
            rows = self._db.execute(
                "SELECT user, time, action, reason, detail FROM events WHERE user = ? "
                "ORDER BY id DESC LIMIT ?",
                (user, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        return [Event(u, t, a, r, json.loads(d)) for u, t, a, r, d in reversed(rows)]

    async def events_since(self, since: float, limit: int = 10000) -> list[Event]:
        """Every user's history entries from ``since`` on, oldest first, at most ``limit``
        (the newest): the console's decisions-per-hour chart."""
        try:
            rows = self._db.execute(
                "SELECT user, time, action, reason, detail FROM events WHERE time >= ? "
                "ORDER BY id DESC LIMIT ?",
                (since, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        return [Event(u, t, a, r, json.loads(d)) for u, t, a, r, d in reversed(rows)]

    # -- persistence of what the detector learned ----------------------------------------

    def checkpoint(self) -> int:
        """Write the baselines of users seen since the last checkpoint; return how many."""
        rows = []
        for user in self._dirty:
            state = self.users.get(user)
            if state is None:
                continue
            nets = {
                n: [first, state.network_seen.get(n, first)] for n, first in state.networks.items()
            }
            rows.append(
                (
                    user,
                    state.baseline_hour,
                    state.hour_index,
                    state.hour_ext,
                    state.flagged_until,
                    json.dumps(nets),
                    state.rcpt_avg,
                    state.rcpt_seen,
                    json.dumps(state.hour_profile),
                    state.profile_since,
                )
            )
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO baselines (user, baseline_hour, hour_index, hour_ext, "
                "flagged_until, networks, rcpt_avg, rcpt_seen, hour_profile, profile_since) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot save baselines: {exc}") from None
        self._dirty.clear()
        return len(rows)

    def forget_idle(self, now: float) -> list[str]:
        gone = super().forget_idle(now)
        if gone:
            self._dirty.difference_update(gone)
            try:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM baselines WHERE user = ?", [(u,) for u in gone])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot forget idle users: {exc}") from None
        return gone

    async def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            self._db.close()
