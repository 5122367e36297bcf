"""The Public Suffix List, loaded once per process (it takes ~50 ms).

Thunderbird's MX step (the MX host's eTLD+1, :mod:`mailwarden.discovery.thunderbird`) and
DMARC's organisational domain (RFC 7489 §3.2, :mod:`mailwarden.audit.sitewide.dmarc`) both ask
it; the list is the one bundled with the ``publicsuffixlist`` package.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def public_suffix_list() -> PublicSuffixList:
    return PublicSuffixList()
