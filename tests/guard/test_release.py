"""Held mail names the MTA holding it: ``guard held`` shows it, ``guard release`` on another
MTA sharing Redis releases it there (remote_postsuper) or says where to run the release."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailwarden.guard.actions import release
from mailwarden.guard.config import GuardConfig
from mailwarden.guard.store.base import HoldInfo
from mailwarden.guard.store.redis import RedisStore
from mailwarden.guard.store.sqlite import SqliteStore
from tests.fixtures.guard_server import guard_cli, write_site
from tests.fixtures.redis_server import running_redis

pytestmark = pytest.mark.slow  # starts the guard and redis

T0 = 1_700_000_000.0

# a stand-in for postsuper/postqueue that appends its arguments to a file
RECORDER = "import sys\nwith open(sys.argv[1], 'a') as f:\n    print(*sys.argv[2:], file=f)\n"


def cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return guard_cli(site, *args, env={**os.environ, "COLUMNS": "400"})


def site_for(folder: Path, url: str, instance: str, calls: Path, remote: bool) -> Path:
    folder.mkdir()
    recorder = folder / "record.py"
    recorder.write_text(RECORDER)
    run = f'["{sys.executable}", "{recorder}", "{calls}"'
    text = f"""
[guard]
store = "redis"
redis_url = "{url}"
instance_name = "{instance}"
postsuper = {run}, "local-postsuper"]
postqueue = {run}, "local-postqueue"]
"""
    if remote:
        text += f'remote_postsuper = {run}, "ssh", "{{instance}}", "postsuper"]\n'
    return write_site(folder, text)


def test_release_on_another_mta_goes_there_or_says_where(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    with running_redis(tmp_path / "redis") as redis:

        async def hold() -> None:
            store = RedisStore(redis.url)
            await store.add_hold(HoldInfo("4Xa1", "jdoe", "12 messages in 1 min", T0, "mta1"))
            await store.add_hold(HoldInfo("4Xb2", "jdoe", "12 messages in 1 min", T0, "mta1"))
            await store.close()

        asyncio.run(hold())
        mta2 = site_for(tmp_path / "mta2", redis.url, "mta2", calls, remote=False)
        held = cli(mta2, "held", "--format", "json")
        assert held.returncode == 0, held.stderr
        assert {(h["queue_id"], h["instance"]) for h in json.loads(held.stdout)} == {
            ("4Xa1", "mta1"),
            ("4Xb2", "mta1"),
        }
        table = cli(mta2, "held")
        assert "mta1" in table.stdout

        # mta2 cannot reach mta1's queue: it names the MTA and the command, releases nothing
        refused = cli(mta2, "release", "4Xa1")
        assert refused.returncode == 2
        said = " ".join(refused.stdout.split())
        assert "held by the MTA of guard instance 'mta1'" in said
        assert f"run on mta1: mailwarden guard -c {mta2} release 4Xa1" in said
        assert not calls.exists()
        assert len(json.loads(cli(mta2, "held", "--format", "json").stdout)) == 2

        # with a remote release command it releases the message on mta1
        remote = site_for(tmp_path / "mta2r", redis.url, "mta2", calls, remote=True)
        released = cli(remote, "release", "4Xa1")
        assert released.returncode == 0, released.stdout + released.stderr
        assert calls.read_text().splitlines() == ["ssh mta1 postsuper -H 4Xa1"]

        # on mta1 itself the local postsuper and postqueue run
        mta1 = site_for(tmp_path / "mta1", redis.url, "mta1", calls, remote=False)
        local = cli(mta1, "release", "jdoe")
        assert local.returncode == 0, local.stdout + local.stderr
        assert calls.read_text().splitlines()[1:] == [
            "local-postsuper -H 4Xb2",
            "local-postqueue -i 4Xb2",
        ]
        assert json.loads(cli(mta1, "held", "--format", "json").stdout) == []


def test_release_is_an_action_the_cli_only_reports(tmp_path: Path) -> None:
    """``actions.release``: released messages leave the store's holds and enter the user's
    history; a failed postsuper keeps the hold listed; another MTA's hold is left alone."""
    calls = tmp_path / "calls.txt"
    recorder = tmp_path / "record.py"
    recorder.write_text(RECORDER)
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nprint('postsuper: fatal: no such queue')\nsys.exit(1)\n")

    def config(postsuper: Path) -> GuardConfig:
        return GuardConfig.model_validate(
            {
                "instance_name": "mta1",
                "postsuper": [sys.executable, str(postsuper), str(calls), "postsuper"],
                "postqueue": [sys.executable, str(recorder), str(calls), "postqueue"],
            }
        )

    async def run() -> None:
        store = SqliteStore(tmp_path / "guard.sqlite")
        for qid, instance in (("4Xa1", "mta1"), ("4Xb2", "mta1"), ("4Xc3", "mta2")):
            await store.add_hold(HoldInfo(qid, "jdoe", "ref K7QW2M4A: 4 rcpts", T0, instance))
        assert await release(store, config(recorder), "nobody") == []

        broken = await release(store, config(failing), "4Xa1")
        assert [(r.hold.queue_id, r.ok, r.elsewhere) for r in broken] == [("4Xa1", False, False)]
        assert "exited with 1: postsuper: fatal: no such queue" in broken[0].detail
        assert len(await store.holds()) == 3  # still held, still listed

        done = await release(store, config(recorder), "jdoe", now=T0 + 60)
        assert [(r.hold.queue_id, r.ok, r.elsewhere) for r in done] == [
            ("4Xa1", True, False),
            ("4Xb2", True, False),
            ("4Xc3", False, True),
        ]
        assert calls.read_text().splitlines() == [
            "postsuper -H 4Xa1",
            "postqueue -i 4Xa1",
            "postsuper -H 4Xb2",
            "postqueue -i 4Xb2",
        ]
        assert [h.queue_id for h in await store.holds()] == ["4Xc3"]
        history = await store.history("jdoe")
        assert [(e.action, e.reason, e.when) for e in history] == [
            ("release", "released 4Xa1 on mta1", T0 + 60),
            ("release", "released 4Xb2 on mta1", T0 + 60),
        ]
        await store.close()

    asyncio.run(run())
