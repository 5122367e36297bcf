"""Map a site's ``[directory]`` section to a backend instance, behind the cache.

Secrets are read here, at the edge: from ``password_file`` or ``password_env`` (or, if the admin
insisted, from the site file). They are handed to the backend and never logged or shown.
"""

from __future__ import annotations

import os

from mailwarden.directory.base import Directory
from mailwarden.directory.cache import CachedDirectory
from mailwarden.directory.config import DirectoryConfig, LdapConfig, SqlConfig
from mailwarden.directory.embedded import EmbeddedDirectory
from mailwarden.directory.ldap_client import DIRECTORY_SETTING, require_ldap_client
from mailwarden.errors import ConfigError

MAX_SECRET_FILE = 4096


def read_password(config: LdapConfig | SqlConfig) -> str | None:
    """The directory password from its configured source, or None when none is configured."""
    if config.password_file is not None:
        try:
            raw = config.password_file.read_bytes()[:MAX_SECRET_FILE]
        except OSError as exc:
            raise ConfigError(
                f"directory.password_file: cannot read {config.password_file}: {exc.strerror}"
            ) from None
        lines = raw.decode("utf-8", "replace").splitlines()
        if not lines or not lines[0]:
            raise ConfigError(f"directory.password_file: {config.password_file} is empty")
        return lines[0]
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if not value:
            raise ConfigError(
                f"directory.password_env: the environment variable {config.password_env} is not set"
            )
        return value
    if config.password is not None:
        return config.password.get_secret_value()
    return None


def open_backend(config: DirectoryConfig) -> Directory:
    """The bare backend for ``config`` (no cache): what ``mailwarden directory check`` uses."""
    if isinstance(config, LdapConfig):
        require_ldap_client(DIRECTORY_SETTING)  # the optional extra: a clear error, not a trace
        from mailwarden.directory.ldap import LdapDirectory

        return LdapDirectory(config, read_password(config))
    if isinstance(config, SqlConfig):
        from mailwarden.directory.sql import SqlDirectory

        return SqlDirectory(config, read_password(config))
    return EmbeddedDirectory(config.path)


def open_directory(config: DirectoryConfig) -> CachedDirectory:
    """A ready-to-use, cached directory for ``config`` (opening is cheap; connections are
    lazy)."""
    return CachedDirectory(
        open_backend(config),
        config.cache,
        deadline=config.deadline,
        retry_interval=config.retry_interval,
    )
