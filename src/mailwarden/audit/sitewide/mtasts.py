"""Site-wide check ``mta-sts``: being written (see docs/audit.md)."""

from __future__ import annotations

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext

NAME = "mta-sts"
AFTER_SCAN = False
CODES: dict[str, str] = {}


async def run(context: SiteContext) -> list[CheckResult]:
    return []
