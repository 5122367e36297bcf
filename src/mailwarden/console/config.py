"""The ``[console]`` section of site.toml: how operators log in, and what the console reads.

It is composed into the site model like ``[guard]``; relative paths resolve against the site
file's folder when the console starts (:meth:`ConsoleConfig.resolved`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailwarden.configmodel import FrozenModel as _Model
from mailwarden.configmodel import KeyedValueError

_NAME = r"^[A-Za-z0-9._@+-]{1,128}$"
_HEADER = r"^[A-Za-z][A-Za-z0-9-]{0,63}$"
_LDAP_URL = r"^ldaps?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$"


class ConsoleLdap(_Model):
    """``[console.ldap]``: log in by binding to the directory as the operator, then require
    membership of a group. Unset connection keys are taken from an LDAP ``[directory]``."""

    uri: str | None = Field(default=None, pattern=_LDAP_URL)
    """Default: the first of ``[directory] servers``."""
    starttls: bool | None = None
    ca_file: Path | None = None
    base_dn: str | None = Field(default=None, max_length=1024)
    """Where operators are searched (default: ``[directory] base_dn``)."""
    bind_dn: str | None = Field(default=None, max_length=1024)
    """Service account that finds the operator's entry and reads the groups (default: the
    directory's)."""
    password_file: Path | None = None
    user_filter: str = Field(default="(uid={login})", max_length=1024)
    """``{login}`` is replaced by the RFC 4515-escaped login name."""
    helpdesk_group: str = Field(min_length=3, max_length=1024)
    """DN of the group whose members get the ``helpdesk`` role."""
    admin_group: str | None = Field(default=None, max_length=1024)
    """DN of the group whose members get the ``admin`` role."""
    member_attribute: str = Field(default="member", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("user_filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        if "{login}" not in value or not (value.startswith("(") and value.endswith(")")):
            raise ValueError("must be a parenthesised filter containing {login}")
        return value


class ConsoleProxy(_Model):
    """``[console.proxy]``: trust the user name an SSO proxy (mod_auth_openidc, oauth2-proxy,
    Shibboleth) puts in a header, but only on connections from ``trusted``."""

    header: str = Field(default="X-Remote-User", pattern=_HEADER)
    trusted: tuple[str, ...] = Field(min_length=1)
    """Addresses or networks of the proxies (``127.0.0.1``, ``10.0.0.0/24``)."""
    admins: tuple[str, ...] = ()
    helpdesk: tuple[str, ...] = ("*",)
    """User names with the helpdesk role; ``*``: everyone the proxy let through."""

    @field_validator("trusted")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class ConsoleConfig(_Model):
    """``[console]``: the operator console (``mailwarden console``)."""

    listen: str = "127.0.0.1:8091"
    """Where ``mailwarden console`` listens without ``--listen``: an internal address, behind
    a TLS proxy on an internal name (docs/console.md)."""
    auth: Literal["local", "ldap", "proxy"] = "local"
    users_file: Path = Path("console-users.txt")
    """Local accounts (``auth = "local"``): ``name:role:argon2id-hash`` lines written by
    ``mailwarden console user add``."""
    ldap: ConsoleLdap | None = None
    proxy: ConsoleProxy | None = None
    idle_minutes: float = Field(default=30, gt=0, le=24 * 60)
    """A session unused this long is over (fractions allowed: 0.5 is 30 seconds)."""
    max_hours: int = Field(default=12, ge=1, le=7 * 24)
    """A session is over this long after login, however busy."""
    login_attempts: int = Field(default=5, ge=1, le=1000)
    """Failed logins allowed per account, and four times this per client address, in
    ``login_window_minutes``; then logins are refused until the window has passed."""
    login_window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    audit_dir: Path | None = Path("/var/lib/mailwarden/audit")
    """Where ``mailwarden audit --save-dir`` keeps its runs (the packaged audit unit's
    folder): the audit page shows the newest run's HTML report and every run's finding
    counts (docs/console.md: Audit)."""
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies whose ``X-Forwarded-For`` names the client (for the log, the history
    and login throttling)."""

    @model_validator(mode="after")
    def _method(self) -> ConsoleConfig:
        if self.auth == "ldap" and self.ldap is None:
            raise KeyedValueError('auth = "ldap" needs a [console.ldap] section', ("auth",))
        if self.auth == "proxy" and self.proxy is None:
            raise KeyedValueError('auth = "proxy" needs a [console.proxy] section', ("auth",))
        for item in self.trusted_proxies:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise KeyedValueError(
                    f"{item!r} is not an IP address or network", ("trusted_proxies",)
                ) from None
        return self

    def resolved(self, base_dir: Path) -> ConsoleConfig:
        """Relative paths made absolute against the site file's folder."""

        def fix(path: Path | None) -> Path | None:
            return path if path is None or path.is_absolute() else base_dir / path

        update: dict[str, object] = {"users_file": fix(self.users_file)}
        if self.audit_dir is not None:
            update["audit_dir"] = fix(self.audit_dir)
        if self.ldap is not None:
            update["ldap"] = self.ldap.model_copy(
                update={
                    "ca_file": fix(self.ldap.ca_file),
                    "password_file": fix(self.ldap.password_file),
                }
            )
        return self.model_copy(update=update)
