"""Is the LDAP client installed? Asked at start, before anything is served.

The LDAP client (bonsai, a C extension on OpenLDAP's libldap) has no binary wheels, so it is
the optional extra ``mailwarden[ldap]``: the base package then installs without a C compiler.
A site that needs LDAP — ``[directory] backend = "ldap"`` or ``[guard.lock] method = "ldap"``
— must therefore fail when it starts (``serve``, ``check-config``, ``directory check``, the
guard), with a message that says what to install, never with an ``ImportError`` traceback in a
worker or, worse, at the first lock. This module imports no LDAP code itself, so any command
may ask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mailwarden.directory.config import LdapConfig
from mailwarden.errors import ConfigError

if TYPE_CHECKING:  # the site model composes the directory's config: no import at run time
    from mailwarden.site.model import Site

DIRECTORY_SETTING = 'directory.backend = "ldap"'
GUARD_LOCK_SETTING = 'guard.lock.method = "ldap"'
MAX_REASON = 200
"""Longest part of the ImportError shown (a missing libldap names a long path)."""


class LdapClientMissing(ConfigError):
    """The site needs LDAP but the client library cannot be imported."""

    code = "LDAP-CLIENT-MISSING"


def require_ldap_client(setting: str) -> None:
    """Return when the LDAP client imports; else raise :class:`LdapClientMissing` for
    ``setting`` (the site file line that needs it).

    A real import, not a look-up of the package: bonsai installed without its libldap (a
    Debian package removed later) fails here too, with the loader's reason.
    """
    try:
        importlib.import_module("bonsai")
    except ImportError as exc:
        reason = str(exc)[:MAX_REASON]
        raise LdapClientMissing(
            f"{setting} needs the LDAP client, which cannot be loaded ({reason}). "
            "Install the extra: pip install 'mailwarden[ldap]'. It builds bonsai from source, "
            "so on Debian install a C compiler and the OpenLDAP headers first: "
            "apt-get install build-essential python3-dev libldap2-dev libsasl2-dev"
        ) from None


def require_site_clients(site: Site, *, guard: bool = True) -> None:
    """Check the LDAP client for every part of ``site`` that uses LDAP: the directory, and the
    guard's lock action unless ``guard`` is false (``serve`` does not run the guard)."""
    if isinstance(site.directory, LdapConfig):
        require_ldap_client(DIRECTORY_SETTING)
    if guard and site.guard is not None and site.guard.lock.method == "ldap":
        require_ldap_client(GUARD_LOCK_SETTING)
