"""What every directory backend provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailwarden.address import Address


@dataclass(frozen=True, slots=True)
class Account:
    """One mailbox owner as the directory knows it."""

    address: str
    """The account's primary address (lookup form)."""
    login: str
    """What the user types as user name in IMAP/POP3/SMTP."""
    display_name: str | None = None
    enabled: bool = True


class Directory(Protocol):
    """An address → account lookup. Implementations must be safe to call concurrently."""

    name: str

    async def lookup(self, address: Address) -> Account | None:
        """The account that owns ``address`` (primary or alias), or None when unknown."""
        ...

    async def close(self) -> None: ...
