"""LDAP search filters built from a template and an untrusted address (RFC 4515).

The address comes from a query string or an XML body, so every value put into a filter is
escaped: ``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a``, ``\\28``, ``\\29``, ``\\5c``,
``\\00``, and so does every other byte outside printable ASCII (the UTF-8 bytes of non-ASCII text).
After escaping, a value can only ever be an equality assertion: no wildcard, no substring, no
extra clause. The template itself is the operator's and is checked once at load time.
"""

from __future__ import annotations

import string

from mailwarden.address import Address

PLACEHOLDERS = frozenset({"address", "localpart", "domain"})
MAX_FILTER = 4096

_SAFE = frozenset(string.ascii_letters + string.digits + "!#$%&'+,-./:;<=>?@[]^_`{|}~ \"")


class FilterError(ValueError):
    """The filter template is not usable; the message says why."""


def escape_value(value: str) -> str:
    """``value`` as an RFC 4515 assertion value: special and non-printable bytes as ``\\XX``."""
    if _SAFE.issuperset(value):  # the usual address: nothing to escape (one C-level check)
        return value
    out: list[str] = []
    for char in value:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"\\{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def check_template(template: str) -> None:
    """Raise :class:`FilterError` unless ``template`` is a parenthesised filter whose only
    placeholders are ``{address}``, ``{localpart}`` and ``{domain}``."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FilterError(f"filter template is malformed: {exc}") from None
    fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            shown = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            raise FilterError(
                f"filter uses the placeholder {{{shown}}}; allowed are exactly {{address}}, "
                "{localpart} and {domain} (write a literal brace as {{ or }})"
            )
    if not fields:
        raise FilterError("filter must use {address} (or {localpart} and {domain})")
    text = render_filter(template, Address("x", "example.org"))
    depth = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0 and index != len(text) - 1:
                raise FilterError("filter has text after its closing parenthesis")
        if depth < 0:
            raise FilterError("filter has an unmatched ')'")
    if depth:
        raise FilterError("filter has an unmatched '('")
    if not (text.startswith("(") and text.endswith(")")):
        raise FilterError("filter must be enclosed in parentheses, e.g. (mail={address})")


def render_filter(template: str, address: Address) -> str:
    """The filter for ``address``: each placeholder replaced by the escaped value."""
    text = template.format_map(
        {
            "address": escape_value(address.key),
            "localpart": escape_value(address.localpart.lower()),
            "domain": escape_value(address.domain),
        }
    )
    if len(text) > MAX_FILTER:
        raise FilterError("filter is longer than 4096 characters")
    return text
