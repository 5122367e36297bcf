"""The audit's site-wide checks: one module per check, about the site as a whole.

:data:`SITE_CHECKS` maps each check's name to its module, in the order reports list them;
:data:`CODES` explains every code any of them can report (docs/audit.md is checked against it).
The contract of a module is in :mod:`mailwarden.audit.sitewide.base`.
"""

from __future__ import annotations

from types import ModuleType

from mailwarden.audit.sitewide import (
    antivirus,
    dane,
    dkim,
    dmarc,
    dnsbl,
    mtasts,
    reverse,
    spf,
    tlsrpt,
)
from mailwarden.audit.sitewide.base import SiteCheck, SiteContext, site_result

_MODULES: tuple[ModuleType, ...] = (
    spf,
    dkim,
    dmarc,
    mtasts,
    tlsrpt,
    dane,
    dnsbl,
    reverse,
    antivirus,
)

SITE_CHECKS: dict[str, ModuleType] = {module.NAME: module for module in _MODULES}
"""Check name → its module (``run``, ``AFTER_SCAN``, ``CODES``), in report order."""

CHECK_CODES: dict[str, tuple[str, ...]] = {module.NAME: tuple(module.CODES) for module in _MODULES}
"""Check name → the codes it defines."""

CODES: dict[str, str] = {code: text for module in _MODULES for code, text in module.CODES.items()}
"""Every code → what it means, why it matters, how to fix it."""

__all__ = ["CHECK_CODES", "CODES", "SITE_CHECKS", "SiteCheck", "SiteContext", "site_result"]
