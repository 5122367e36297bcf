"""Who a rendered document is for, and what user name each server gets."""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.site.model import DomainView, Server

PLACEHOLDER_ADDRESS = "%EMAILADDRESS%"
PLACEHOLDER_LOCALPART = "%EMAILLOCALPART%"


@dataclass(frozen=True, slots=True)
class Subject:
    """The user a document is rendered for; ``address`` None means the generic document."""

    address: str | None = None
    localpart: str | None = None
    login: str | None = None
    """The login name from the directory (rule ``directory``), when the address is known."""
    display_name: str | None = None

    @property
    def generic(self) -> bool:
        return self.address is None


GENERIC = Subject()


def username(server: Server, domain: DomainView, subject: Subject) -> str:
    """The user name ``server`` expects from ``subject``: the heart of autoconfiguration.

    Generic documents carry the client-side placeholders; per-user documents the real value.
    An address the directory does not know logs in with the address itself, exactly like a
    known address under the ``address`` rule, so the answer does not tell who exists.
    """
    rule = server.login or domain.config.login
    if subject.address is None:
        return PLACEHOLDER_LOCALPART if rule == "localpart" else PLACEHOLDER_ADDRESS
    if rule == "localpart" and subject.localpart is not None:
        return subject.localpart
    if rule == "directory" and subject.login is not None:
        return subject.login
    return subject.address
