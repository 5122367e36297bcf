"""Site-wide check ``dkim``: being written (see docs/audit.md)."""

from __future__ import annotations

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext

NAME = "dkim"
AFTER_SCAN = False
CODES: dict[str, str] = {}


async def run(context: SiteContext) -> list[CheckResult]:
    return []
