"""The ``[guard]`` section of site.toml: typed, validated, immutable.

The defaults are meant to be safe on day one: ceilings in line with what large providers allow
an ordinary mailbox (Google Workspace: 2,000 recipients a day; Microsoft 365: 30 messages a
minute), an anomaly ladder tuned by ``bench/guard_sim.py``, automatic locks only for the clear
cases, and a store that fails open so that a Redis outage never stops a university's mail.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mailwarden.configmodel import FrozenModel as _Model


class ClassLimits(_Model):
    """Ceilings and learning floors for one class of users (``[guard.classes.NAME]``).

    Ceilings are hard: above ``rcpts_per_minute`` mail is throttled, above ``rcpts_per_hour``
    held, above ``rcpts_per_day`` the account is locked. The floors keep the anomaly score quiet
    for users the guard knows little about yet.
    """

    rcpts_per_minute: int = Field(default=120, ge=1)
    rcpts_per_hour: int = Field(default=600, ge=1)
    rcpts_per_day: int = Field(default=2000, ge=1)
    hourly_floor: int = Field(default=40, ge=1)
    """External recipients an hour any user of the class may reach without it counting as
    unusual, however quiet the user's own history is."""
    domains_floor: int = Field(default=25, ge=1)
    """Distinct external recipient domains an hour that never count as unusual."""
    domains_day_floor: int = Field(default=60, ge=1)
    """Distinct external recipient domains a day that never count as unusual."""
    distinct_floor: int = Field(default=200, ge=1)
    """Distinct recipient addresses (internal and external) an hour that never count as
    unusual."""
    night_floor: int = Field(default=20, ge=1)
    """External recipients an hour never unusual for the hour of the day, however quiet the
    user's own profile is at that hour."""
    anomaly: bool = True
    """False for list owners and newsletter senders: only the ceilings apply."""


def _default_classes() -> dict[str, ClassLimits]:
    return {
        "default": ClassLimits(),
        "bulk": ClassLimits(
            rcpts_per_minute=2000,
            rcpts_per_hour=20000,
            rcpts_per_day=100000,
            hourly_floor=20000,
            domains_floor=20000,
            domains_day_floor=100000,
            distinct_floor=20000,
            night_floor=20000,
            anomaly=False,
        ),
    }


class Ladder(_Model):
    """Score thresholds of the ladder throttle → hold + alert → lock (``[guard.ladder]``)."""

    throttle: float = Field(default=2.0, gt=0)
    hold: float = Field(default=4.0, gt=0)
    lock: float = Field(default=7.0, gt=0)
    lock_mode: Literal["auto", "confirm"] = "auto"
    """``auto`` locks at the lock score; ``confirm`` stops at hold + alert and waits for an
    admin (``mailwarden guard lock USER``)."""
    baseline_factor: float = Field(default=4.0, ge=1)
    """How far above the user's own busiest recent hour sending counts as unusual."""
    baseline_half_life_days: float = Field(default=14.0, gt=0)
    profile_days: float = Field(default=7.0, ge=1)
    """Days of history before the user's hour-of-day profile is trusted."""
    profile_utc_offset: float = Field(default=0.0, ge=-14, le=14)
    """Hours added to UTC to get the site's local hour of day (the profile's 24 slots)."""
    profile_weight: float = Field(default=1.0, ge=0)
    """Largest score part for sending far above the user's usual volume at this hour of the
    day (0: off)."""
    distinct_weight: float = Field(default=1.0, ge=0)
    """Score per multiple of the distinct-recipient allowance exceeded (0: off)."""
    accepted_weight: float = Field(default=1.0, ge=0)
    """Largest score part for recipients already accepted this hour beyond the allowance,
    added only together with another signal (0: off)."""
    same_subject_free: int = Field(default=5, ge=1)
    """Messages with one subject an hour that never count as unusual (threads, invitations)."""
    same_subject_day_free: int = Field(default=10, ge=1)
    """Messages with one subject a day that never count as unusual."""
    message_rcpts_free: int = Field(default=25, ge=1)
    """Recipients in one message that never count as unusual, whatever the user's habit."""
    minute_free: int = Field(default=8, ge=1)
    """No longer read: messages a minute alone are never scored (a busy honest sender is not
    an attack); the pace of new external domains is. Accepted so older site files load."""
    flag_hours: float = Field(default=24.0, gt=0)
    """How long an account stays flagged (no learning of networks or volume) after a
    throttle or hold."""

    @model_validator(mode="after")
    def _ordered(self) -> Ladder:
        if not self.throttle <= self.hold <= self.lock:
            raise ValueError("ladder scores must satisfy throttle <= hold <= lock")
        return self


class LockAction(_Model):
    """How an account is locked (``[guard.lock]``): nothing, a command, or an LDAP attribute."""

    method: Literal["none", "command", "ldap"] = "none"
    command: tuple[str, ...] = ()
    """argv run on lock; environment: GUARD_USER, GUARD_REASON, GUARD_ACTION=lock|unlock."""
    unlock_command: tuple[str, ...] = ()
    ldap_uri: str = ""
    bind_dn: str = ""
    bind_password_file: Path | None = None
    user_dn_template: str = ""
    """e.g. ``uid={user},ou=people,dc=example,dc=edu`` (the value is DN-escaped)."""
    attribute: str = "mailSubmissionLocked"
    locked_value: str = "TRUE"
    unlocked_value: str = "FALSE"
    timeout: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _complete(self) -> LockAction:
        if self.method == "command" and not self.command:
            raise ValueError("lock method 'command' needs command = [...]")
        if self.method == "ldap" and not (self.ldap_uri and self.user_dn_template):
            raise ValueError("lock method 'ldap' needs ldap_uri and user_dn_template")
        return self


class Alerts(_Model):
    """Where alerts go (``[guard.alerts]``); every channel is optional."""

    mail_to: tuple[str, ...] = ()
    mail_from: str = "mailwarden-guard@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    syslog: bool = False
    syslog_target: str = "/dev/log"
    """Where syslog alerts go: a unix datagram socket (an absolute path, the local syslog
    daemon's ``/dev/log`` by default) or ``udp://HOST:PORT``."""
    syslog_format: Literal["rfc3164", "rfc5424"] = "rfc3164"
    """The message format; facility mail, severity warning, tag ``mailwarden-guard``."""
    timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("syslog_target")
    @classmethod
    def _syslog_target(cls, value: str) -> str:
        if value.startswith("udp://"):
            host, sep, port = value[6:].rpartition(":")
            if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r}: expected udp://HOST:PORT")
        elif not value.startswith("/"):
            raise ValueError(f"{value!r}: expected an absolute socket path or udp://HOST:PORT")
        return value


class GuardConfig(_Model):
    """Everything the outbound guard needs to know (``[guard]``)."""

    policy_listen: str = "127.0.0.1:10040"
    """``HOST:PORT`` or ``unix:/path`` of the Postfix policy delegation server."""
    milter_listen: str = ""
    """``HOST:PORT`` or ``unix:/path`` of the milter; empty: no milter."""
    policy_idle_timeout: float = Field(default=600.0, gt=0, le=86400)
    """Seconds a policy connection may go without progress (a complete request, or our
    answers read) before it is closed: idle, half-sent or not reading. Postfix itself closes
    its idle policy connections after ``smtpd_policy_service_max_idle`` (300 s)."""
    milter_idle_timeout: float = Field(default=3600.0, gt=0, le=86400)
    """The same for milter connections. Longer, because the MTA's milter connection is quiet
    while the client uploads the message (headers reach the milter after the end of DATA),
    and a large attachment over a slow link can take more than ten minutes."""
    max_connections: int = Field(default=2000, ge=1, le=1_000_000)
    """Connections each listener (policy, milter) holds at a time; beyond it a new connection
    is closed at once (Postfix retries, then applies ``default_action`` /
    ``milter_default_action``) and a ``…-connection-refused`` line is logged."""
    store: Literal["memory", "sqlite", "redis"] = "sqlite"
    state_path: Path = Path("guard-state.sqlite")
    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://…`` (TLS; a private CA with
    ``?ssl_ca_certs=/path/ca.pem``), ``unix:///path/redis.sock?db=N`` or, behind Redis
    Sentinel, ``redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT/SERVICE/DB`` (see
    :mod:`mailwarden.guard.store.sentinel`)."""
    redis_timeout: float = Field(default=0.2, gt=0, le=5)
    on_store_error: Literal["accept", "tempfail"] = "accept"
    """Fail open (default: mail flows, admins are alerted) or closed (4.7.x tempfail)."""
    message_stage: Literal["policy", "milter", "milter-only"] = "policy"
    """Which front end counts whole messages and gives their signals; the other only
    enforces. ``milter`` when both are wired (the milter sees the Subject and the webmail's
    Received header; the policy server counts recipients); ``milter-only`` for sendmail,
    which has no policy delegation: the milter then counts recipients as well."""
    local_domains: tuple[str, ...] = ()
    """Recipient domains that count as internal; empty: the site's served domains."""
    webmail_received_by: str = ""
    """The host name in the ``by`` clause of the webmail's Received header (e.g.
    ``webmail.example.edu``); its ``from`` clause carries the browser's IP address."""
    classes: dict[str, ClassLimits] = Field(default_factory=_default_classes)
    members: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Class name → SASL user names (list owners, newsletter senders)."""
    ladder: Ladder = Field(default_factory=Ladder)
    lock: LockAction = Field(default_factory=LockAction)
    alerts: Alerts = Field(default_factory=Alerts)
    lock_ttl_hours: float = Field(default=0, ge=0)
    """0: locks stay until ``mailwarden guard unlock``; otherwise they expire."""
    instance_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    """This MTA's name among those sharing a store: held messages record it, since only the
    MTA holding a message can release it. Default: the host name."""
    remote_postsuper: tuple[str, ...] = ()
    """argv prefix that releases a message held on *another* MTA, ``{instance}`` standing
    for its ``instance_name``, e.g. ``["ssh", "{instance}", "postsuper", "-c",
    "/etc/postfix"]``; empty: ``guard release`` says where to run it instead."""
    remote_postqueue: tuple[str, ...] = ()
    """The same for ``postqueue -i`` (optional)."""
    postsuper: tuple[str, ...] = ("postsuper",)
    """argv prefix used to release held messages, e.g. ``["postsuper", "-c", "/etc/postfix"]``."""
    postqueue: tuple[str, ...] = ("postqueue",)
    """argv prefix used to deliver a released message at once (``postqueue -i ID``); Postfix
    otherwise waits for the next deferred-queue run."""
    helpdesk: str = Field(default="the helpdesk", min_length=1, max_length=200)
    """Whom the refusal of a locked account's mail tells the sender to contact, e.g. ``"the
    IT service desk (+49 30 1234-5678)"``: ``This account is locked; contact HELPDESK (ref
    …)``. Printable ASCII (it goes into SMTP replies), no ``%``."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        from redis.connection import parse_url  # what every Redis connection of ours reads

        from mailwarden.guard.store.sentinel import FORM, is_sentinel_url, parse_sentinel_url
        from mailwarden.guard.store.sentinel import redact as _redact

        if is_sentinel_url(value):
            try:
                parse_sentinel_url(value)
            except ValueError as exc:
                raise ValueError(f"{_redact(value)!r}: {exc} (expected {FORM})") from None
            return value
        try:
            parse_url(value)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ValueError(
                f"{value!r}: expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS), "
                f"unix:///path/to/redis.sock or (Redis Sentinel) {FORM} ({exc})"
            ) from None
        return value

    @field_validator("helpdesk")
    @classmethod
    def _helpdesk(cls, value: str) -> str:
        bad = sorted({ch for ch in value if not " " <= ch <= "~" or ch == "%"})
        if bad:
            raise ValueError(
                f"{value!r}: an SMTP reply takes printable ASCII without '%' only "
                f"(found {', '.join(map(repr, bad))})"
            )
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _merge_default_classes(cls, value: object) -> object:
        """Classes the file names replace the built-in ones; the others stay available."""
        if isinstance(value, dict):
            return {**_default_classes(), **value}
        return value

    @model_validator(mode="after")
    def _classes_known(self) -> GuardConfig:
        if "default" not in self.classes:
            raise ValueError("guard.classes needs a 'default' class")
        for name in self.members:
            if name not in self.classes:
                raise ValueError(
                    f"guard.members.{name}: no such class (defined: {', '.join(self.classes)})"
                )
        return self

    _member_index: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        self._member_index = {u: name for name, users in self.members.items() for u in users}

    def class_of(self, user: str) -> str:
        """The class name of a SASL user (``default`` unless listed in ``members``)."""
        return self._member_index.get(user, "default")

    def limits_of(self, user: str) -> ClassLimits:
        return self.classes[self.class_of(user)]
