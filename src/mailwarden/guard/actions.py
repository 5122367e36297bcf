"""What the guard does beyond answering the MTA: lock accounts, release held mail, alert people.

Every action runs at the edge with a timeout and never raises into the decision path: a broken
LDAP server or mail relay must not stop the guard from refusing a spammer's next message. A
failed action is logged and reported back (``ActionResult``) so the CLI can say what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
import socket
import time
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from mailwarden.guard.config import Alerts, GuardConfig, LockAction
from mailwarden.guard.store.base import Event, HoldInfo, Store

log = logging.getLogger("mailwarden.guard")

MAX_ALERT_TEXT = 8000
SYSLOG_TAG = "mailwarden-guard"
FACILITY_MAIL = 2
SEVERITY_WARNING = 4
SYSLOG_MAX = {"rfc3164": 1024, "rfc5424": 2048}
"""Bytes per message: RFC 3164's limit, and what RFC 5424 receivers must accept."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    detail: str


def _dn_escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value inside a DN."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


async def run_command(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> ActionResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return ActionResult(False, f"{argv[0]}: {exc.strerror}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ActionResult(False, f"{argv[0]}: no answer after {timeout:g} s")
    text = out.decode("utf-8", "replace").strip()[-500:]
    if proc.returncode != 0:
        return ActionResult(False, f"{argv[0]} exited with {proc.returncode}: {text}")
    return ActionResult(True, text or f"{argv[0]}: ok")


class Locker:
    """Locks and unlocks accounts in the place that decides who may send (LDAP or a hook)."""

    def __init__(self, config: LockAction) -> None:
        if config.method == "ldap":  # bonsai is the optional extra: fail at start, not at a lock
            from mailwarden.directory.ldap_client import GUARD_LOCK_SETTING, require_ldap_client

            require_ldap_client(GUARD_LOCK_SETTING)
        self.config = config

    async def set(self, user: str, *, locked: bool, reason: str) -> ActionResult:
        c = self.config
        if c.method == "none":
            return ActionResult(True, "no lock action configured (the guard's own lock applies)")
        if c.method == "command":
            argv = c.command if locked or not c.unlock_command else c.unlock_command
            env = {
                "GUARD_USER": user,
                "GUARD_REASON": reason[:1000],
                "GUARD_ACTION": "lock" if locked else "unlock",
            }
            return await run_command(argv, env, c.timeout)
        return await self._ldap(user, locked)

    async def _ldap(self, user: str, locked: bool) -> ActionResult:
        import bonsai
        import bonsai.errors

        c = self.config
        dn = c.user_dn_template.format(user=_dn_escape(user))
        password = ""
        if c.bind_password_file is not None:
            try:
                password = Path(c.bind_password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                return ActionResult(False, f"{c.bind_password_file}: {exc.strerror}")
        client = bonsai.LDAPClient(c.ldap_uri)
        if c.bind_dn:
            client.set_credentials("SIMPLE", user=c.bind_dn, password=password)
        value = c.locked_value if locked else c.unlocked_value
        try:
            async with asyncio.timeout(c.timeout):
                conn = await client.connect(is_async=True, timeout=c.timeout)
                try:
                    entry = bonsai.LDAPEntry(dn, conn)
                    # bonsai annotates *values as tuples; the values are plain strings
                    entry.change_attribute(
                        c.attribute,
                        bonsai.LDAPModOp.REPLACE,
                        value,  # type: ignore[arg-type]
                    )
                    await entry.modify()
                finally:
                    conn.close()
        except TimeoutError:
            return ActionResult(False, f"LDAP {c.ldap_uri}: no answer after {c.timeout:g} s")
        except bonsai.errors.LDAPError as exc:
            return ActionResult(
                False, f"LDAP {c.ldap_uri}: cannot set {c.attribute} on {dn}: {exc}"
            )
        return ActionResult(True, f"LDAP: {dn} {c.attribute}={value}")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for an admin action (lock, unlock, release), for the history, the log and
    the alert. The command line is ``Actor()``: "an admin" on a root shell of the MTA."""

    name: str = "admin"
    via: str = "cli"
    """``cli`` or ``console``."""
    client: str = ""
    """The address the console request came from."""

    @property
    def shown(self) -> str:
        """``an admin`` (command line), ``alice (console, from 192.0.2.7)``."""
        if self.via == "cli":
            return "an admin" if self.name == "admin" else self.name
        where = f", from {self.client}" if self.client else ""
        return f"{self.name} ({self.via}{where})"

    def origin(self) -> dict[str, str]:
        """History detail that says who and from where (nothing for the command line, whose
        entries have always been plain)."""
        if self.via == "cli":
            return {}
        return {"by": self.name, "via": self.via, "client": self.client}


@dataclass(frozen=True, slots=True)
class Unlocked:
    """What an unlock did: whether the guard had the account locked, and the lock action."""

    found: bool
    action: ActionResult


async def unlock_account(
    store: Store,
    locker: Locker,
    alerter: Alerter,
    user: str,
    actor: Actor,
    *,
    now: float | None = None,
) -> Unlocked:
    """Let ``user`` send again: clear the guard's lock, undo the lock action (LDAP attribute
    or command hook), note it in the history and tell the admins. The one unlock the command
    line and the console share; build ``locker`` first, so that a lock action that cannot
    run (LDAP without its client) refuses before the store changes."""
    found = await store.unlock(user)
    result = await locker.set(user, locked=False, reason="unlocked")
    when = time.time() if now is None else now
    reason = f"unlocked by {actor.shown}"
    await store.add_event(Event(user, when, "unlock", reason, actor.origin()))
    record: dict[str, object] = {
        "event": "unlock",
        "user": user,
        "by": actor.name,
        "via": actor.via,
        "client": actor.client,
        "was_locked": found,
        "lock_action": result.detail,
        "lock_ok": result.ok,
    }
    log.info(json.dumps(record, ensure_ascii=False))
    await alerter.send(f"mailwarden guard: account {user} {reason}", record)
    return Unlocked(found, result)


async def lock_account(
    store: Store,
    locker: Locker,
    alerter: Alerter,
    user: str,
    reason: str,
    actor: Actor,
    *,
    now: float | None = None,
) -> ActionResult:
    """Lock ``user`` by hand: the guard's lock, the history, the lock action, an alert."""
    when = time.time() if now is None else now
    await store.lock(user, reason, when, by=actor.name)
    await store.add_event(Event(user, when, "lock", reason, {"by": actor.name, **actor.origin()}))
    result = await locker.set(user, locked=True, reason=reason)
    record: dict[str, object] = {
        "event": "lock",
        "user": user,
        "reason": reason,
        "by": actor.name,
        "via": actor.via,
        "client": actor.client,
        "lock_action": result.detail,
        "lock_ok": result.ok,
    }
    log.info(json.dumps(record, ensure_ascii=False))
    await alerter.send(f"mailwarden guard: account {user} locked by {actor.shown}", record)
    return result


RELEASE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Released:
    """What became of one held message on release."""

    hold: HoldInfo
    ok: bool
    detail: str
    elsewhere: bool = False
    """Held by another guard instance's MTA that this one cannot reach (no
    ``remote_postsuper``): nothing was tried; the release must run there."""


def release_commands(
    config: GuardConfig, hold: HoldInfo
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """postsuper and postqueue argv prefixes that reach the MTA holding ``hold`` (None: only
    a command run on that MTA can)."""
    if hold.instance in ("", config.instance_name):
        return config.postsuper, config.postqueue
    if not config.remote_postsuper:
        return None

    def there(argv: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(arg.replace("{instance}", hold.instance) for arg in argv)

    return there(config.remote_postsuper), there(config.remote_postqueue)


async def release(
    store: Store,
    config: GuardConfig,
    key: str,
    *,
    now: float | None = None,
    actor: Actor | None = None,
) -> list[Released]:
    """Release the held messages of queue ID or user ``key``: ``postsuper -H`` on the MTA
    holding each (here, or over ``remote_postsuper``), then ``postqueue -i`` so it leaves at
    once. A released message is dropped from the store's holds and noted in its user's
    history; one that could not be released stays listed. Empty: nothing held under ``key``."""
    out = []
    for hold in [h for h in await store.holds() if key in (h.queue_id, h.user)]:
        commands = release_commands(config, hold)
        if commands is None:
            detail = f"held by the MTA of guard instance {hold.instance!r}"
            out.append(Released(hold, False, detail, elsewhere=True))
            continue
        postsuper, postqueue = commands
        result = await run_command((*postsuper, "-H", hold.queue_id), {}, RELEASE_TIMEOUT)
        if not result.ok:
            out.append(Released(hold, False, result.detail))
            continue  # still held: stays listed
        if postqueue:  # released to the deferred queue: ask for delivery now
            await run_command((*postqueue, "-i", hold.queue_id), {}, RELEASE_TIMEOUT)
        await store.drop_holds(hold.queue_id)
        where = f" on {hold.instance}" if hold.instance else ""
        when = time.time() if now is None else now
        by = actor or Actor()
        reason = f"released {hold.queue_id}{where}" + (f" by {by.shown}" if by.via != "cli" else "")
        await store.add_event(Event(hold.user, when, "release", reason, by.origin()))
        log.info(
            json.dumps(
                {"event": "release", "queue_id": hold.queue_id, "user": hold.user}
                | {"by": by.name, "via": by.via, "client": by.client},
                ensure_ascii=False,
            )
        )
        out.append(Released(hold, True, f"released {hold.queue_id} ({hold.user}){where}"))
    return out


class Alerter:
    """Mail to the postmaster, a JSON webhook and syslog; each channel optional."""

    def __init__(self, config: Alerts) -> None:
        self.config = config

    async def send(self, subject: str, record: dict[str, object]) -> list[ActionResult]:
        c = self.config
        text = json.dumps(record, indent=2, ensure_ascii=False)[:MAX_ALERT_TEXT]
        jobs = []
        if c.mail_to:
            jobs.append(asyncio.to_thread(self._mail, subject, text))
        if c.webhook_url:
            jobs.append(asyncio.to_thread(self._webhook, record))
        if c.syslog:
            jobs.append(asyncio.to_thread(self._syslog, subject, record))
        if not jobs:
            return []
        results = await asyncio.gather(*jobs, return_exceptions=True)
        out = []
        for r in results:
            if isinstance(r, ActionResult):
                out.append(r)
            else:
                out.append(ActionResult(False, f"alert failed: {r}"))
        for r in out:
            if not r.ok:
                log.error(json.dumps({"event": "alert-failed", "detail": r.detail}))
        return out

    def _mail(self, subject: str, text: str) -> ActionResult:
        c = self.config
        msg = EmailMessage()
        msg["From"] = c.mail_from
        msg["To"] = ", ".join(c.mail_to)
        msg["Subject"] = subject.replace("\n", " ")[:200]
        msg.set_content(text)
        try:
            with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.timeout) as smtp:
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            return ActionResult(False, f"mail to {c.smtp_host}:{c.smtp_port}: {exc}")
        return ActionResult(True, f"mailed {', '.join(c.mail_to)}")

    def _webhook(self, record: dict[str, object]) -> ActionResult:
        c = self.config
        assert c.webhook_url is not None
        body = json.dumps(record).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked by the model
            c.webhook_url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=c.timeout) as response:  # noqa: S310
                status = response.status
        except OSError as exc:
            return ActionResult(False, f"webhook {c.webhook_url}: {exc}")
        return ActionResult(200 <= status < 300, f"webhook {c.webhook_url}: HTTP {status}")

    def _syslog(self, subject: str, record: dict[str, object]) -> ActionResult:
        c = self.config
        summary = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = syslog_message(f"{subject} {summary}", c.syslog_format)
        return send_syslog(data, c.syslog_target)


def _escape(text: str) -> str:
    """Control characters (newlines included) as ``\\xNN``: one alert, one log line."""
    return "".join(f"\\x{ord(ch):02x}" if ch < " " or ch == "\x7f" else ch for ch in text)


def syslog_message(
    text: str,
    fmt: str = "rfc3164",
    *,
    severity: int = SEVERITY_WARNING,
    now: float | None = None,
    host: str | None = None,
    pid: int | None = None,
) -> bytes:
    """One syslog datagram (facility mail) in RFC 3164 or RFC 5424 form, at most
    ``SYSLOG_MAX[fmt]`` bytes, control characters escaped."""
    when = time.time() if now is None else now
    hostname = host or socket.gethostname() or "-"
    proc = os.getpid() if pid is None else pid
    pri = FACILITY_MAIL * 8 + severity
    if fmt == "rfc5424":
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
        stamp += f".{int(when % 1 * 1000):03d}Z"
        head = f"<{pri}>1 {stamp} {hostname} {SYSLOG_TAG} {proc} - - "
    else:
        local = time.localtime(when)
        stamp = (
            time.strftime("%b ", local) + f"{local.tm_mday:>2} " + time.strftime("%H:%M:%S", local)
        )
        head = f"<{pri}>{stamp} {hostname.split('.')[0]} {SYSLOG_TAG}[{proc}]: "
    data = (head + _escape(text)).encode("utf-8", "replace")
    limit = SYSLOG_MAX.get(fmt, 1024)
    if len(data) > limit:  # cut, never inside a UTF-8 sequence
        data = data[:limit].decode("utf-8", "ignore").encode("utf-8")
    return data


def send_syslog(data: bytes, target: str, timeout: float = 5.0) -> ActionResult:
    """Send one datagram to a unix datagram socket path or ``udp://HOST:PORT``."""
    try:
        if target.startswith("udp://"):
            host, _, port = target[6:].rpartition(":")
            family, kind, proto, _, address = socket.getaddrinfo(
                host.strip("[]"), int(port), type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.sendto(data, address)
        else:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.sendto(data, target)
    except OSError as exc:
        return ActionResult(False, f"syslog {target}: {exc.strerror or exc}")
    return ActionResult(True, f"syslog {target}")
