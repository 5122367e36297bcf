"""The ``[directory]`` section of site.toml: which backend, how to reach it, how to cache it.

The backends are a tagged union on ``backend``: a new backend is a new ``…Config`` class here and
a new module under :mod:`mailwarden.directory`, nothing else. The site model composes the union
as it composes the guard's section; the classes here describe configuration only, the backends
themselves (:mod:`~mailwarden.directory.embedded`, :mod:`~mailwarden.directory.ldap`,
:mod:`~mailwarden.directory.sql`) take one of them and open connections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from mailwarden.configmodel import FrozenModel as _Model
from mailwarden.configmodel import KeyedValueError


class CacheConfig(_Model):
    """The cache in front of every directory backend (``[directory.cache]``).

    Entries are fresh for their TTL; after that they are served at once while one background
    query refreshes them, and while the backend is down they are served for up to ``stale_ttl``.
    """

    positive_ttl: float = Field(default=300.0, ge=0, le=86400)
    negative_ttl: float = Field(default=60.0, ge=0, le=86400)
    stale_ttl: float = Field(default=86400.0, ge=0, le=30 * 86400)
    max_entries: int = Field(default=100_000, ge=0, le=10_000_000)
    """LRU bound; 0 turns caching off (single-flight and the deadline still apply)."""


OutagePolicy = Literal["generic", "unknown"]


class _CommonConfig(_Model):
    """What every backend shares: the cache in front of it and the outage policy."""

    cache: CacheConfig = Field(default_factory=CacheConfig)
    deadline: float = Field(default=1.0, gt=0, le=30)
    """Seconds a request waits for the directory before it is answered without it."""
    on_outage: OutagePolicy = "generic"
    """What users get when the directory cannot answer and no cached entry exists: the
    domain's generic settings, or the answer for an unknown address (``unknown_address``)."""
    retry_interval: float = Field(default=2.0, gt=0, le=300)
    """After a failure, lookups that miss the cache skip the backend for this many seconds."""

    def resolve_paths(self, base_dir: Path) -> _CommonConfig:
        """Relative file names resolve against the site file's folder."""
        update = {
            key: base_dir / value
            for key in self._path_keys
            if isinstance(value := getattr(self, key), Path) and not value.is_absolute()
        }
        return self.model_copy(update=update) if update else self

    _path_keys: ClassVar[tuple[str, ...]] = ()


class EmbeddedConfig(_CommonConfig):
    """The SQLite user table mailwarden keeps itself (``backend = "embedded"``, the default)."""

    backend: Literal["embedded"] = "embedded"
    path: Path = Path("users.sqlite")
    _path_keys: ClassVar[tuple[str, ...]] = ("path",)


class LdapAttributes(_Model):
    """Which LDAP attributes hold what mailwarden needs (``[directory.attributes]``)."""

    login: str = Field(default="uid", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    display_name: str | None = Field(default="cn", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    enabled: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    """Attribute that says whether the account may use mail; an entry without it (or with
    this setting unset) is enabled."""
    enabled_values: tuple[str, ...] = ("TRUE", "active", "enabled", "yes", "1")
    """Values of ``enabled`` (compared case-insensitively) that mean the account is enabled."""


_LDAP_URL = r"^ldaps?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$"


class _SecretSource(_Model):
    password_file: Path | None = None
    """File whose first line is the password (mode 0600, owned by the service user)."""
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """Environment variable holding the password."""
    password: SecretStr | None = None
    """The password in clear in the site file: refused unless ``allow_password_in_site_file``."""
    allow_password_in_site_file: bool = False

    @model_validator(mode="after")
    def _one_secret(self) -> _SecretSource:
        given = [k for k in ("password_file", "password_env", "password") if getattr(self, k)]
        if len(given) > 1:
            raise KeyedValueError(
                f"set only one of password_file, password_env, password (got {', '.join(given)})",
                (given[1],),
            )
        if self.password is not None and not self.allow_password_in_site_file:
            raise KeyedValueError(
                "a password in clear in the site file is refused; use password_file or "
                "password_env (or set allow_password_in_site_file = true if you must)",
                ("password",),
            )
        return self


class LdapConfig(_CommonConfig, _SecretSource):
    """OpenLDAP, Active Directory or any LDAPv3 server (``backend = "ldap"``)."""

    backend: Literal["ldap"]
    servers: tuple[Annotated[str, Field(pattern=_LDAP_URL)], ...] = Field(min_length=1)
    """``ldap://host:port`` or ``ldaps://host:port``, tried in order (failover)."""
    starttls: bool = True
    """Upgrade ``ldap://`` connections with StartTLS (ignored for ``ldaps://``)."""
    ca_file: Path | None = None
    """PEM CA certificates that sign the servers' certificates (default: the system store)."""
    verify_certificate: bool = True
    bind_dn: str | None = Field(default=None, max_length=1024)
    """DN to bind as (a read-only service account); unset: anonymous."""
    base_dn: str = Field(min_length=1, max_length=1024)
    scope: Literal["base", "one", "sub"] = "sub"
    filter: str = Field(
        default="(|(mail={address})(mailAlternateAddress={address}))", max_length=2048
    )
    """Search filter; ``{address}``, ``{localpart}`` and ``{domain}`` are replaced by the
    RFC 4515-escaped parts of the looked-up address."""
    attributes: LdapAttributes = Field(default_factory=LdapAttributes)
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    timeout: float = Field(default=2.0, gt=0, le=60)
    """Seconds one search may take before the server is considered unresponsive."""
    pool_size: int = Field(default=8, ge=1, le=256)
    _path_keys: ClassVar[tuple[str, ...]] = ("ca_file", "password_file")

    @model_validator(mode="after")
    def _check_filter(self) -> LdapConfig:
        from mailwarden.directory.filter import FilterError, check_template

        try:
            check_template(self.filter)
        except FilterError as exc:
            raise KeyedValueError(str(exc), ("filter",), self.filter) from None
        return self


class SqlConfig(_CommonConfig, _SecretSource):
    """Any SQL database with an async SQLAlchemy driver (``backend = "sql"``)."""

    backend: Literal["sql"]
    url: str = Field(min_length=1, max_length=2048)
    """SQLAlchemy URL with an async driver, e.g. ``postgresql+asyncpg://mail@db/postfix``,
    ``mysql+aiomysql://…`` or ``sqlite+aiosqlite:///users.db``; no password here (see
    ``password_file``)."""
    query: str = Field(min_length=1, max_length=4096)
    """SELECT returning the columns ``login`` and optionally ``display_name`` and ``enabled``;
    ``:address``, ``:localpart`` and ``:domain`` are bound parameters."""
    login_query: str | None = Field(default=None, min_length=1, max_length=4096)
    """Optional SELECT for the reverse look-up (the operator console's search by user name):
    the accounts whose login is the bound parameter ``:login``, with the columns ``address``
    and ``login`` and optionally ``display_name`` and ``enabled``. Unset: no search by login."""
    timeout: float = Field(default=2.0, gt=0, le=60)
    pool_size: int = Field(default=8, ge=1, le=256)
    _path_keys: ClassVar[tuple[str, ...]] = ("password_file",)

    @model_validator(mode="after")
    def _check_query(self) -> SqlConfig:
        if ":address" not in self.query and ":localpart" not in self.query:
            raise KeyedValueError(
                "the query must use the bound parameter :address (or :localpart and :domain)",
                ("query",),
                self.query,
            )
        if not self.query.lstrip().lower().startswith(("select", "with")):
            raise KeyedValueError("the query must be a SELECT", ("query",), self.query)
        if self.login_query is not None:
            if ":login" not in self.login_query:
                raise KeyedValueError(
                    "login_query must use the bound parameter :login",
                    ("login_query",),
                    self.login_query,
                )
            if not self.login_query.lstrip().lower().startswith(("select", "with")):
                raise KeyedValueError(
                    "login_query must be a SELECT", ("login_query",), self.login_query
                )
        if "+" not in self.url.split("://", 1)[0]:
            raise KeyedValueError(
                "name an async driver in the URL scheme, e.g. postgresql+asyncpg:// or "
                "sqlite+aiosqlite://",
                ("url",),
                self.url,
            )
        return self


DirectoryConfig = Annotated[EmbeddedConfig | LdapConfig | SqlConfig, Field(discriminator="backend")]
