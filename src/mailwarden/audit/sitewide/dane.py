"""Site-wide check ``dane``: being written (see docs/audit.md)."""

from __future__ import annotations

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext

NAME = "dane"
AFTER_SCAN = True
CODES: dict[str, str] = {}


async def run(context: SiteContext) -> list[CheckResult]:
    return []
