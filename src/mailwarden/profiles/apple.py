"""Apple configuration profiles (``.mobileconfig``) for iOS, iPadOS and macOS Mail.

One ``com.apple.mail.managed`` payload per profile (protocols.md §4): the preferred incoming
protocol (IMAP unless the service set prefers POP3) and SMTP, each on its implicit-TLS server when
there is one, because Apple documents no STARTTLS switch and ``UseSSL`` on 143/587 is unverified.

Identifiers and UUIDs are derived from (site identifier, address), never random: installing the
profile for the same address again replaces the installed one instead of adding a second account.
Passwords are never written: a profile is a file that travels by mail and sits in Downloads.
The directory's display name is not written either: anyone can ask for anyone's profile, and a
name would tell them who owns an address. Mail asks for the sender name on first use.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from typing import Any

from mailwarden.address import Address
from mailwarden.profiles import xmltext
from mailwarden.profiles.subject import Subject, username
from mailwarden.site.model import DomainView, Server, ServiceKind, Site

CONTENT_TYPE = "application/x-apple-aspen-config"

# All profile UUIDs live in this namespace, so they never collide with another tool's uuid5s.
_NAMESPACE = uuid.UUID("6f1c3f0e-4a53-5b0c-9d6e-6d61696c7764")

_AUTH = {
    "password-cleartext": "EmailAuthPassword",
    "password-encrypted": "EmailAuthCRAMMD5",
    "NTLM": "EmailAuthNTLM",
    "none": "EmailAuthNone",
}
"""Site auth methods Apple Mail can be told about; OAuth2, GSSAPI and client certificates have
no profile value, so a server offering only those still gets the password method."""

_TEXT = {
    "en": {
        "description": "Mail settings for {address}. Installs the account; Mail asks for the "
        "password once.",
        "consent": "This profile sets up the mail account {address} ({org}). It contains no "
        "password.",
    },
    "de": {
        "description": "E-Mail-Einstellungen für {address}. Richtet das Konto ein; Mail fragt "
        "einmal nach dem Passwort.",
        "consent": "Dieses Profil richtet das E-Mail-Konto {address} ({org}) ein. Es enthält "
        "kein Passwort.",
    },
}


@dataclass(frozen=True, slots=True)
class ProfileIds:
    """The stable names of one address's profile."""

    identifier: str
    profile_uuid: str
    account_identifier: str
    account_uuid: str


def identifier_prefix(site: Site) -> str:
    """The site's reverse-DNS prefix: ``[profiles] identifier`` or the primary domain reversed."""
    if site.profiles.identifier:
        return site.profiles.identifier
    return ".".join(reversed(site.primary_domain.split("."))) + ".mail"


def profile_ids(site: Site, address: Address) -> ProfileIds:
    """Identifiers that stay the same for the same (site, address), whatever case is typed."""
    prefix = identifier_prefix(site)
    key = address.key
    profile = uuid.uuid5(_NAMESPACE, f"{prefix}\n{key}\nprofile")
    account = uuid.uuid5(_NAMESPACE, f"{prefix}\n{key}\nmail-account")
    identifier = f"{prefix}.{profile.hex}"
    return ProfileIds(
        identifier=identifier,
        profile_uuid=str(profile).upper(),
        account_identifier=f"{identifier}.account",
        account_uuid=str(account).upper(),
    )


def preferred_server(servers: tuple[Server, ...]) -> Server:
    """The first implicit-TLS server, else the first STARTTLS one, else the first at all."""
    for tls in ("implicit", "starttls"):
        for server in servers:
            if server.tls == tls:
                return server
    return servers[0]


def incoming_kind(domain: DomainView) -> ServiceKind:
    """The incoming protocol the profile configures (the service set's preference)."""
    services = domain.services
    first: ServiceKind = services.incoming_first
    if services.servers(first):
        return first
    return "pop3" if first == "imap" else "imap"


def _auth(server: Server) -> str:
    for method in server.auth:
        if method in _AUTH:
            return _AUTH[method]
    return "EmailAuthPassword"


def _server_keys(
    prefix: str, kind: str, server: Server, domain: DomainView, subject: Subject
) -> dict[str, Any]:
    keys: dict[str, Any] = {
        f"{prefix}MailServerHostName": server.host,
        f"{prefix}MailServerPortNumber": server.port_for(kind),
        f"{prefix}MailServerUseSSL": server.tls != "none",
        f"{prefix}MailServerAuthentication": _auth(server),
    }
    if not subject.generic:  # the generic profile lets the device ask for the user name
        keys[f"{prefix}MailServerUsername"] = username(server, domain, subject)
    return keys


def build(
    site: Site, domain: DomainView, subject: Subject, address: Address, *, lang: str = "en"
) -> dict[str, Any]:
    """The profile as a plist dictionary (see :func:`render` for the bytes)."""
    ids = profile_ids(site, address)
    text = _TEXT.get(lang, _TEXT["en"])
    org = site.organisation.name
    label = domain.config.display_name or org
    shown = subject.address or str(address)
    kind = incoming_kind(domain)
    incoming = preferred_server(domain.services.servers(kind))
    outgoing = preferred_server(domain.services.smtp)
    account: dict[str, Any] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": ids.account_identifier,
        "PayloadUUID": ids.account_uuid,
        "PayloadDisplayName": label,
        "PayloadOrganization": org,
        "EmailAccountType": "EmailTypeIMAP" if kind == "imap" else "EmailTypePOP",
        "EmailAccountDescription": label,
        **_server_keys("Incoming", kind, incoming, domain, subject),
        **_server_keys("Outgoing", "smtp", outgoing, domain, subject),
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    if not subject.generic:
        account["EmailAddress"] = subject.address
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ids.identifier,
        "PayloadUUID": ids.profile_uuid,
        "PayloadDisplayName": label,
        "PayloadDescription": text["description"].format(address=shown),
        "PayloadOrganization": org,
        "PayloadRemovalDisallowed": False,
        "ConsentText": {"default": text["consent"].format(address=shown, org=org)},
        "PayloadContent": [account],
    }


def render(
    site: Site, domain: DomainView, subject: Subject, address: Address, *, lang: str = "en"
) -> bytes:
    """The unsigned profile for ``address`` as an XML plist (``plistlib`` output).

    Every string goes through :func:`xmltext.clean` first: plistlib writes U+FFFE/U+FFFF raw
    (a document no parser accepts) and raises on C0 controls, and directory or site values
    are not checked for either.
    """
    return plistlib.dumps(_clean(build(site, domain, subject, address, lang=lang)), sort_keys=True)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return xmltext.clean(value)
    if isinstance(value, dict):
        return {xmltext.clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def file_name(domain: DomainView) -> str:
    """A download name that says what the file is; only the (A-label) domain, no user input."""
    return f"{domain.served}-mail.mobileconfig"
