"""Import Thunderbird ISP database documents (``config-v1.1.xml``) as site-file entries.

:func:`parse_document` reads a document, :func:`convert` maps documents to service sets and
domains (with notes on everything that changed), :func:`render` writes the result as TOML.
"""

from mailwarden.ispdb.convert import Note, SiteFragment, convert
from mailwarden.ispdb.document import (
    MAX_DOCUMENT_BYTES,
    ProviderDocument,
    ServerEntry,
    parse_document,
)
from mailwarden.ispdb.toml_text import render, site_header

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Note",
    "ProviderDocument",
    "ServerEntry",
    "SiteFragment",
    "convert",
    "parse_document",
    "render",
    "site_header",
]
