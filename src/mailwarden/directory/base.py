"""What every directory backend provides, and the one optional capability some add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailwarden.address import Address
from mailwarden.errors import DirectoryError

MAX_BY_LOGIN = 20
"""Most accounts a search by login returns (one person may own a few mailboxes; more means
the login attribute is not what the operator thinks)."""


@dataclass(frozen=True, slots=True)
class Account:
    """One mailbox owner as the directory knows it."""

    address: str
    """The account's primary address (lookup form)."""
    login: str
    """What the user types as user name in IMAP/POP3/SMTP."""
    display_name: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LoginEntry:
    """An account found by its login, with its other addresses."""

    account: Account
    aliases: tuple[str, ...] | None = None
    """None: this backend cannot list them."""

    def owns(self, address: str) -> bool:
        return address == self.account.address or address in (self.aliases or ())


class Directory(Protocol):
    """An address → account lookup. Implementations must be safe to call concurrently."""

    name: str

    async def lookup(self, address: Address) -> Account | None:
        """The account that owns ``address`` (primary or alias), or None when unknown."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class LoginSearch(Protocol):
    """The reverse look-up, login → accounts: what the operator console needs when the
    helpdesk has a user name and no address. Optional: the autoconfig server never asks it,
    so a backend without it is still a whole directory."""

    async def by_login(self, login: str) -> list[LoginEntry]:
        """The accounts whose login is ``login`` (at most :data:`MAX_BY_LOGIN`), ordered by
        address; :class:`NoLoginSearch` when this backend, as configured, cannot search."""
        ...


class NoLoginSearch(DirectoryError):
    """The directory cannot search by login (a backend without the capability, an SQL
    directory without ``login_query``)."""

    code = "DIRECTORY-NO-LOGIN-SEARCH"


async def by_login(directory: Directory, login: str) -> list[LoginEntry]:
    """``directory``'s accounts with ``login``, or :class:`NoLoginSearch`."""
    if not isinstance(directory, LoginSearch):
        raise NoLoginSearch(f"the {directory.name} directory cannot search by login")
    return await directory.by_login(login)
