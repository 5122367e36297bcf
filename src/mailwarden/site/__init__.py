"""The site model: everything mailwarden knows about one mail service, loaded from site.toml."""

from mailwarden.site.load import load_site, parse_site
from mailwarden.site.model import (
    Domain,
    LoginRule,
    Organisation,
    Server,
    ServiceSet,
    Site,
    TlsMode,
)

__all__ = [
    "Domain",
    "LoginRule",
    "Organisation",
    "Server",
    "ServiceSet",
    "Site",
    "TlsMode",
    "load_site",
    "parse_site",
]
