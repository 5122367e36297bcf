"""End to end: real Postfix (two instances) with Dovecot SASL, two guard processes sharing a
real Redis, slapd holding the users, smtp-sink as the Internet and the postmaster's inbox."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.guard_server import (
    BURST_CLASSES,
    GuardProcess,
    running_guard,
    write_site,
)
from tests.fixtures.guard_server import guard_cli as cli
from tests.fixtures.net import free_port
from tests.fixtures.postfix_lab import PASSWORD, MailLab, running_mail_lab
from tests.fixtures.redis_server import RedisServer, running_redis
from tests.fixtures.slapd import PEOPLE_DN, ROOT_DN, ROOT_PASSWORD, Slapd, running_slapd
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow  # starts the guard, postfix, dovecot, slapd and redis

USERS = ["zz0001", "zz0002", "zz0003", "zz0004", "zz0005"]


@dataclass
class World:
    lab: MailLab
    redis: RedisServer
    slapd: Slapd
    site: Path
    guards: dict[str, GuardProcess]


def guard_toml(redis: RedisServer, slapd: Slapd, secret: Path, sink_port: int) -> str:
    return f"""
[guard]
store = "redis"
redis_url = "{redis.url}"
redis_timeout = 0.3
message_stage = "milter"
local_domains = ["example.com"]
{BURST_CLASSES}
[guard.lock]
method = "ldap"
ldap_uri = "{slapd.url}"
bind_dn = "{ROOT_DN}"
bind_password_file = "{secret}"
user_dn_template = "uid={{user}},{PEOPLE_DN}"
attribute = "mailEnabled"
locked_value = "FALSE"
unlocked_value = "TRUE"

[guard.alerts]
mail_to = ["postmaster@example.com"]
mail_from = "guard@example.com"
smtp_host = "127.0.0.1"
smtp_port = {sink_port}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("guard-e2e")
    sink_port = free_port()
    with running_redis(tmp / "redis") as redis, running_slapd(tmp / "slapd", users=5) as slapd:
        secret = tmp / "ldap.secret"
        secret.write_text(ROOT_PASSWORD + "\n")
        site = write_site(tmp, guard_toml(redis, slapd, secret, sink_port))
        with (
            running_guard(site, name="mta1", milter=True) as g1,
            running_guard(site, name="mta2", milter=True) as g2,
        ):
            guards = {
                "mta1": (g1.policy_port, g1.milter_port),
                "mta2": (g2.policy_port, g2.milter_port),
            }
            with running_mail_lab(USERS, guards, sink_port) as lab:
                yield World(lab, redis, slapd, site, {"mta1": g1, "mta2": g2})


def ldap_attribute(slapd: Slapd, uid: str, attribute: str) -> str:
    out = subprocess.run(
        [
            "ldapsearch",
            "-LLL",
            "-x",
            "-H",
            slapd.url,
            "-D",
            ROOT_DN,
            "-w",
            ROOT_PASSWORD,
            "-b",
            f"uid={uid},{PEOPLE_DN}",
            "-s",
            "base",
            attribute,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith(f"{attribute}:"):
            return line.split(":", 1)[1].strip()
    return ""


def spam_run(
    lab: MailLab, user: str, mtas: list[str], messages: int
) -> list[tuple[bool, int, str]]:
    out = []
    for i in range(messages):
        rcpts = [f"victim{i}-{k}@target{i}-{k}.example" for k in range(4)]
        r = lab.submit(mtas[i % len(mtas)], user, rcpts, subject=f"Your parcel {i}")
        out.append((r.accepted, r.code, r.text))
        if not r.accepted and "locked" in r.text:
            break
    return out


def test_normal_mail_is_delivered(world: World) -> None:
    r = world.lab.submit("mta1", "zz0001", ["friend@example.org"], subject="minutes of today")
    assert r.accepted, r
    wait_until(lambda: "minutes of today" in world.lab.sink_text(), 20)


def test_milter_over_tcp_does_not_stall_postfix(world: World) -> None:
    """Answering every stage keeps Postfix from waiting ~40 ms per message (Nagle plus
    delayed ACK on unanswered packets): many messages in one session stay fast."""
    with smtplib.SMTP("127.0.0.1", world.lab.submission["mta1"], timeout=30) as smtp:
        smtp.login("zz0001", PASSWORD)
        start = time.perf_counter()
        for i in range(40):
            smtp.sendmail(
                "zz0001@example.com",
                [f"r{i}@list{i % 4}.example"],
                f"Subject: digest {i}\r\n\r\nhello\r\n",
            )
        per_message = (time.perf_counter() - start) / 40
    assert per_message < 0.030, f"{per_message * 1000:.1f} ms per message"


def test_spam_run_is_stopped_locked_in_ldap_alerted_and_unlock_restores(world: World) -> None:
    lab = world.lab
    assert ldap_attribute(world.slapd, "zz0002", "mailEnabled") == ""
    results = spam_run(lab, "zz0002", ["mta1"], 30)
    accepted = sum(1 for ok, _, _ in results if ok)
    assert not results[-1][0], results
    assert results[-1][1] in (550, 554), results[-1]
    assert "5.7.1" in results[-1][2]
    assert accepted <= 6, results
    # the lock reached the directory and the postmaster
    wait_until(lambda: ldap_attribute(world.slapd, "zz0002", "mailEnabled") == "FALSE", 20)
    wait_until(lambda: "account zz0002 locked" in lab.sink_text(), 20)
    # the lock is enforced by the other MTA as well (shared Redis)
    other = lab.submit("mta2", "zz0002", ["friend@example.org"])
    assert not other.accepted
    assert "locked" in other.text
    locked = cli(world.site, "locked", "--format", "json")
    assert '"zz0002"' in locked.stdout, locked.stderr
    # unlock: directory attribute restored, mail flows again
    unlocked = cli(world.site, "unlock", "zz0002")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    assert ldap_attribute(world.slapd, "zz0002", "mailEnabled") == "TRUE"
    again = lab.submit("mta1", "zz0002", ["friend@example.org"], subject="sorry about that")
    assert again.accepted, again


def test_burst_split_across_two_mtas_is_caught(world: World) -> None:
    results = spam_run(world.lab, "zz0003", ["mta1", "mta2"], 30)
    assert not results[-1][0], results
    assert "locked" in results[-1][2]
    assert sum(1 for ok, _, _ in results if ok) <= 6, results


def test_held_mail_is_listed_and_released(world: World) -> None:
    lab = world.lab
    rcpts = [f"member{k}@club{k}.example" for k in range(4)]  # 4th recipient > 3 an hour
    r = lab.submit("mta1", "zz0005", rcpts, subject="club newsletter draft")
    assert r.accepted, r  # accepted, but it must not leave
    wait_until(lambda: lab.hold_queue("mta1") != "", 20)
    held = cli(world.site, "held", "--format", "json")
    assert held.returncode == 0, held.stderr
    users = [e["user"] for e in json.loads(held.stdout)]
    assert "zz0005" in users
    assert "zz0002" in users  # the spam run was held on its way up the ladder
    assert "club newsletter draft" not in lab.sink_text()
    # point release at mta1's Postfix and release everything zz0005 has in the hold queue
    conf = lab.folder / "mta1" / "conf"
    text = world.site.read_text(encoding="utf-8")
    world.site.write_text(
        text.replace(
            'local_domains = ["example.com"]\n',
            'local_domains = ["example.com"]\n'
            f'postsuper = ["/usr/sbin/postsuper", "-c", "{conf}"]\n'
            f'postqueue = ["/usr/sbin/postqueue", "-c", "{conf}"]\n',
        ),
        encoding="utf-8",
    )
    released = cli(world.site, "release", "zz0005")
    assert released.returncode == 0, released.stdout + released.stderr
    wait_until(lambda: "club newsletter draft" in lab.sink_text(), 30)
    left = json.loads(cli(world.site, "held", "--format", "json").stdout)
    assert "zz0005" not in [e["user"] for e in left]


def test_redis_down_mail_flows_and_the_alert_says_why(world: World) -> None:
    world.redis.stop()
    try:
        r = world.lab.submit("mta1", "zz0004", ["friend@example.org"], subject="redis is down")
        assert r.accepted, r
        wait_until(lambda: "redis is down" in world.lab.sink_text(), 20)
        wait_until(lambda: "state store redis is down" in world.lab.sink_text(), 20)
        assert "fail-open" in world.lab.sink_text()
    finally:
        world.redis.start()
