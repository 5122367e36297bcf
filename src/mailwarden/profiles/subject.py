"""Who a rendered document is for, and what user name each server gets."""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.directory.base import Account
from mailwarden.site.model import DomainView, Server, UnknownAddressPolicy

PLACEHOLDER_ADDRESS = "%EMAILADDRESS%"
PLACEHOLDER_LOCALPART = "%EMAILLOCALPART%"
PLACEHOLDER_DOMAIN = "%EMAILDOMAIN%"


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


def subject_for_account(
    address: str, localpart: str, account: Account | None, policy: UnknownAddressPolicy
) -> Subject | None:
    """The subject to render for ``address`` once the directory has answered: the account's
    login when it is known and enabled, else what the domain's ``unknown_address`` policy says
    (None: refuse)."""
    if account is not None and account.enabled:
        return Subject(address, localpart, account.login, account.display_name)
    if policy == "reject":
        return None
    if policy == "generic":
        return GENERIC
    return Subject(address=address, localpart=localpart)


def username(server: Server, domain: DomainView, subject: Subject) -> str:
    """The user name ``server`` expects from ``subject``: the heart of autoconfiguration.

    Generic documents carry the client-side placeholders; per-user documents the real value.
    An address the directory does not know logs in with the address itself, exactly like a
    known address under the ``address`` rule, so the answer does not tell who exists.
    """
    if server.login_template is not None:
        return fill_template(server.login_template, subject.address)
    rule = server.login or domain.config.login
    if subject.address is None:
        return PLACEHOLDER_LOCALPART if rule == "localpart" else PLACEHOLDER_ADDRESS
    if rule == "localpart" and subject.localpart is not None:
        return subject.localpart
    if rule == "directory" and subject.login is not None:
        return subject.login
    return subject.address


def fill_template(template: str, address: str | None) -> str:
    """``template`` with the placeholders filled in from ``address`` (kept for the generic
    document, where the client fills them in itself)."""
    if address is None:
        return template
    localpart, _, domain = address.rpartition("@")
    return (
        template.replace(PLACEHOLDER_ADDRESS, address)
        .replace(PLACEHOLDER_LOCALPART, localpart)
        .replace(PLACEHOLDER_DOMAIN, domain)
    )
