"""What the site file says each client should end with for an address.

The documents are rendered by the server's own renderers for the subject the server would
render them for (the directory is asked, the unknown-address policy applied), then read back by
the same readers the probe uses for live answers: a difference is a difference in the deployment,
not in two readings of the format.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.address import Address
from mailwarden.directory.factory import open_directory
from mailwarden.discovery.pox import parse_response
from mailwarden.discovery.settings import ClientSettings, from_autoconfig, from_pox
from mailwarden.errors import DirectoryError
from mailwarden.ispdb.document import parse_document
from mailwarden.profiles import outlook, thunderbird
from mailwarden.profiles.subject import subject_for_account
from mailwarden.site.model import Site


@dataclass(frozen=True, slots=True)
class Expected:
    """Per client (``thunderbird``, ``outlook``, ``autodiscover-json``) the settings the site
    file gives, or None where it gives none; ``note`` says why when there is nothing to compare."""

    settings: dict[str, ClientSettings]
    note: str = ""


async def expected_settings(site: Site, address: Address) -> Expected:
    domain = site.domain(address.domain)
    if domain is None:
        return Expected({}, f"the site file does not serve {address.domain}")
    if domain.config.moved_to is not None:
        return Expected({}, f"{domain.name} moved to {domain.config.moved_to} (redirectAddr)")
    account = None
    if domain.needs_directory():
        directory = open_directory(site.directory)
        try:
            account = await directory.lookup(address)
            if account is None and domain.is_alias:
                account = await directory.lookup(Address(address.localpart, domain.name))
        except DirectoryError as exc:
            return Expected({}, f"the directory did not answer ({exc.message})")
        finally:
            await directory.close()
    subject = subject_for_account(
        str(address), address.localpart, account, domain.config.unknown_address
    )
    if subject is None:
        return Expected({}, f"the site refuses unknown addresses of {domain.name}")
    if subject.generic:
        note = "the site answers this address with the generic document"
        return Expected({}, note)
    tb = from_autoconfig(
        parse_document(thunderbird.render(site, domain, subject), "site file"), address
    )
    pox = parse_response(outlook.render_settings(domain, subject))
    ol = from_pox(pox.protocols, address, reader="outlook")
    tb_pox = from_pox(pox.protocols, address, reader="thunderbird")
    return Expected({"thunderbird": tb, "outlook": ol, "autodiscover-json": ol, "tb-pox": tb_pox})
