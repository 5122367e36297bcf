"""The command line and the console share the guard's admin actions; building the lock action
comes first, so that a lock action that cannot run changes nothing in the store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from mailwarden.guard.actions import Actor, Alerter, Locker, lock_account, unlock_account
from mailwarden.guard.config import Alerts, LockAction
from mailwarden.guard.store.sqlite import SqliteStore
from tests.console.helpers import console_site
from tests.fixtures.guard_server import guard_cli
from tests.test_install import BLOCK_BONSAI

LDAP_LOCK = """
[guard]
store = "sqlite"
state_path = "guard-state.sqlite"
[guard.lock]
method = "ldap"
ldap_uri = "ldap://127.0.0.1:9"
user_dn_template = "uid={user},ou=people,dc=example,dc=com"
attribute = "mailEnabled"
locked_value = "FALSE"
unlocked_value = "TRUE"
"""


def without_bonsai(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_BONSAI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=site.parent,
    )


def test_lock_and_unlock_refuse_before_the_store_changes(tmp_path: Path) -> None:
    site = console_site(tmp_path, '[console]\nauth = "local"\n', LDAP_LOCK)
    locked = without_bonsai(site, "guard", "-c", str(site), "lock", "jdoe", "--reason", "x")
    assert locked.returncode == 2
    assert locked.stderr.startswith("mailwarden: error [LDAP-CLIENT-MISSING]")
    assert json.loads(guard_cli(site, "locked", "--format", "json").stdout) == []
    assert json.loads(guard_cli(site, "history", "jdoe", "--format", "json").stdout) == []
    assert guard_cli(site, "lock", "jdoe", "--reason", "x").returncode == 2  # LDAP unreachable
    unlocked = without_bonsai(site, "guard", "-c", str(site), "unlock", "jdoe")
    assert unlocked.returncode == 2
    assert '"jdoe"' in guard_cli(site, "locked", "--format", "json").stdout  # still locked
    console = without_bonsai(site, "console", "-c", str(site), "--listen", "127.0.0.1:9")
    assert console.returncode == 2
    assert console.stderr.startswith("mailwarden: error [LDAP-CLIENT-MISSING]")


def test_cli_and_console_actors_in_the_history(tmp_path: Path) -> None:
    out = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$GUARD_ACTION $GUARD_USER $GUARD_REASON" >> {out}\n')
    hook.chmod(0o755)

    async def main() -> list[tuple[str, str, dict[str, str]]]:
        store = SqliteStore(tmp_path / "state.sqlite", 3600.0)
        locker = Locker(LockAction(method="command", command=(str(hook),)))
        alerter = Alerter(Alerts())
        console = Actor("alice", "console", "192.0.2.7")
        await lock_account(store, locker, alerter, "jdoe", "phished", console, now=1.0)
        done = await unlock_account(store, locker, alerter, "jdoe", Actor(), now=2.0)
        assert done.found
        assert done.action.ok
        again = await unlock_account(store, locker, alerter, "jdoe", console, now=3.0)
        assert not again.found
        events = await store.history("jdoe")
        await store.close()
        return [(e.action, e.reason, e.detail) for e in events]

    assert asyncio.run(main()) == [
        ("lock", "phished", {"by": "alice", "via": "console", "client": "192.0.2.7"}),
        ("unlock", "unlocked by an admin", {}),
        (
            "unlock",
            "unlocked by alice (console, from 192.0.2.7)",
            {"by": "alice", "via": "console", "client": "192.0.2.7"},
        ),
    ]
    assert out.read_text().splitlines() == [
        "lock jdoe phished",
        "unlock jdoe unlocked",
        "unlock jdoe unlocked",
    ]
