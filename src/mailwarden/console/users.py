"""Local operator accounts: one ``name:role:argon2id-hash`` line each, in a file only the
console's user can read.

argon2id with the library's (RFC 9106 "low memory") parameters: a stolen file costs an
attacker 64 MiB and a few passes of memory-hard work per guess. Verifying a wrong password costs
the same as a right one, and an unknown name is checked against a dummy hash so that the answer
time does not tell which names exist.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mailwarden.errors import ConfigError, InputError

Role = Literal["helpdesk", "admin"]
ROLES: tuple[Role, ...] = ("helpdesk", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
MAX_FILE = 1 << 20
MIN_PASSWORD = 12
MAX_PASSWORD = 1024

_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash("not a password of anyone")


@dataclass(frozen=True, slots=True)
class LocalUser:
    name: str
    role: Role
    hash: str


def parse_users(text: str, source: str) -> dict[str, LocalUser]:
    """The accounts in ``text``; a bad line is a :class:`ConfigError` naming file and line."""
    users: dict[str, LocalUser] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, hashed = rest.partition(":")
        where = f"{source}:{number}"
        if not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{where}: expected name:role:hash with a name of letters, digits, ._@+-"
            )
        if role not in ROLES:
            raise ConfigError(f"{where}: role {role[:20]!r} is not one of {', '.join(ROLES)}")
        if not hashed.startswith("$argon2id$"):
            raise ConfigError(f"{where}: the password hash is not argon2id")
        if name in users:
            raise ConfigError(f"{where}: {name} is listed twice")
        users[name] = LocalUser(name, role, hashed)
    return users


def load_users(path: Path) -> dict[str, LocalUser]:
    """The accounts in ``path``; a missing file is no accounts (nobody can log in yet)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the console users: {exc.strerror}") from None
    if len(raw) > MAX_FILE:
        raise ConfigError(f"{path}: larger than {MAX_FILE} bytes")
    return parse_users(raw.decode("utf-8", "replace"), str(path))


def format_users(users: dict[str, LocalUser]) -> str:
    head = "# mailwarden console accounts: name:role:argon2id hash (mailwarden console user add)\n"
    return head + "".join(f"{u.name}:{u.role}:{u.hash}\n" for u in users.values())


def save_users(path: Path, users: dict[str, LocalUser]) -> None:
    """Whole or not at all, mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_users(users))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password must have at most {MAX_PASSWORD} characters")


def make_user(name: str, role: str, password: str) -> LocalUser:
    if not NAME_RE.fullmatch(name):
        raise InputError(f"{name[:40]!r}: a user name is 1-128 letters, digits or ._@+-")
    if role not in ROLES:
        raise InputError(f"--role {role}: one of {', '.join(ROLES)}")
    check_password(password)
    return LocalUser(name, role, _HASHER.hash(password))


def verify(users: dict[str, LocalUser], name: str, password: str) -> LocalUser | None:
    """The account when ``password`` is right; the same work when the name is unknown."""
    user = users.get(name)
    candidate = user.hash if user is not None else _DUMMY
    try:
        _HASHER.verify(candidate, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user
