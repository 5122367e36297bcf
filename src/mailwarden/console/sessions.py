"""Sessions and CSRF tokens, kept in memory.

The console runs as one process (one worker): a dictionary is the simplest store that cannot be
read from disk by anyone, and a restart logging everyone out is acceptable for an operator tool.
The session id is 256 random bits in a ``Secure; HttpOnly; SameSite=Strict`` cookie; each
session has its own CSRF token, compared in constant time on every form post. A session ends
after ``idle`` seconds without a request or ``max_age`` seconds after login, whichever is first.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from mailwarden.console.users import Role

COOKIE = "mwc_session"
MAX_SESSIONS = 10000


@dataclass(frozen=True, slots=True)
class Operator:
    """Who is logged in, and what they may do."""

    name: str
    role: Role
    method: str
    """``local``, ``ldap`` or ``proxy``."""

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(slots=True)
class Session:
    id: str
    operator: Operator
    csrf: str
    created: float
    seen: float
    client: str
    lang: str = ""
    """The language chosen with the switch (kept for the session)."""
    flash: list[str] = field(default_factory=list)
    """Messages for the next page (what an action did)."""


class Sessions:
    def __init__(self, idle: float, max_age: float) -> None:
        self.idle = idle
        self.max_age = max_age
        self._by_id: dict[str, Session] = {}

    def create(self, operator: Operator, client: str, now: float) -> Session:
        if len(self._by_id) >= MAX_SESSIONS:
            self.sweep(now)
            if len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest go
                for old in sorted(self._by_id.values(), key=lambda s: s.seen)[: MAX_SESSIONS // 10]:
                    del self._by_id[old.id]
        session = Session(
            secrets.token_urlsafe(32), operator, secrets.token_urlsafe(32), now, now, client
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session for ``session_id`` (touched), or None when unknown or expired."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if now - session.seen > self.idle or now - session.created > self.max_age:
            del self._by_id[session_id]
            return None
        session.seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def sweep(self, now: float) -> None:
        for sid in [
            s.id
            for s in self._by_id.values()
            if now - s.seen > self.idle or now - s.created > self.max_age
        ]:
            del self._by_id[sid]

    def __len__(self) -> int:
        return len(self._by_id)


def csrf_ok(session: Session, token: str) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), token.encode())


def cookie_header(session_id: str, max_age: int) -> bytes:
    return (
        f"{COOKIE}={session_id}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"
    ).encode("ascii")


def clear_cookie_header() -> bytes:
    return f"{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict".encode("ascii")


def cookie_value(raw: str, name: str = COOKIE) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header."""
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value[:128]
    return None
