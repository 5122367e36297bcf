"""Pages from templates: jinja2 with autoescaping, one inline style sheet whose hash is the
only style the Content-Security-Policy allows, and no script at all."""

from __future__ import annotations

import base64
import hashlib
import time
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from mailwarden.console.i18n import STRINGS, Lang

_ENV = Environment(
    loader=PackageLoader("mailwarden.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
CSS = files("mailwarden.console").joinpath("templates/console.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{_CSS_HASH}'; "
    "img-src 'self' data:; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "–"


def render(name: str, lang: Lang, query: dict[str, str], **values: Any) -> bytes:
    """Template ``name`` with the common values (words, style, language switch)."""
    t = STRINGS[lang]
    switch = urlencode({**query, "lang": t["switch_lang"]})
    values.setdefault("operator", None)
    values.setdefault("csrf", "")
    values.setdefault("flash", [])
    values.setdefault("errors", [])
    values.setdefault("page", "")
    values.setdefault("title", t["console"])
    html = _ENV.get_template(name).render(
        # the style sheet is ours and its hash is in the CSP: it must go out byte for byte
        t=t,
        lang=lang,
        css=Markup(CSS),  # noqa: S704 - our own file, never user input
        when=when,
        switch_query=switch,
        **values,
    )
    return html.encode("utf-8")
