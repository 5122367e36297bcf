"""Which endpoints the audit finds: the site file's servers, the autoconfig host, the MX hosts and
[[audit.endpoints]], each per address, with names published in a real Knot DNS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailwarden.audit.endpoints import find_endpoints
from mailwarden.discovery.records import render_zone, wanted_records
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.fixtures.discovery_lab import DOMAIN, HOSTS, SITE
from tests.fixtures.knot import running_knot

pytestmark = pytest.mark.slow  # starts knotd

EXTRA = """
[[audit.endpoints]]
host = "webmail.example.test"
port = 443
protocol = "https"

[[audit.endpoints]]
host = "gone.example.test"
port = 993
protocol = "imap"
"""


def test_every_endpoint_per_address(tmp_path: Path) -> None:
    site = parse_site(SITE + EXTRA, base_dir=tmp_path)
    zones = {block.domain: render_zone([block]) for block in wanted_records(site, ttl=300)}
    zones[DOMAIN] += HOSTS + (
        f"imap.{DOMAIN}. 300 IN AAAA ::1\nwebmail.{DOMAIN}. 300 IN A 127.0.0.3\n"
    )
    with running_knot(zones, tmp_path) as knot:
        found = asyncio.run(find_endpoints(site, Resolver(parse_nameserver(knot.nameserver))))
    got = {(e.host, e.port, e.protocol, e.tls, e.address) for e in found.endpoints}
    imap = f"imap.{DOMAIN}"
    smtp = f"smtp.{DOMAIN}"
    assert got == {
        (imap, 993, "imap", "implicit", "127.0.0.2"),
        (imap, 993, "imap", "implicit", "::1"),
        (imap, 143, "imap", "starttls", "127.0.0.2"),
        (imap, 143, "imap", "starttls", "::1"),
        (imap, 995, "pop3", "implicit", "127.0.0.2"),
        (imap, 995, "pop3", "implicit", "::1"),
        (smtp, 465, "smtp", "implicit", "127.0.0.1"),
        (smtp, 587, "smtp", "starttls", "127.0.0.1"),
        (f"autodiscover.{DOMAIN}", 443, "https", "implicit", "127.0.0.1"),
        (f"mx.{DOMAIN}", 25, "smtp", "starttls", "127.0.0.1"),
        (f"webmail.{DOMAIN}", 443, "https", "implicit", "127.0.0.3"),
    }
    mx = next(e for e in found.endpoints if e.port == 25)
    assert mx.roles == (f"MX of {DOMAIN}",)
    assert mx.domains == (DOMAIN,)
    imaps = next(e for e in found.endpoints if e.port == 993)
    assert DOMAIN in imaps.domains
    assert "example-alias.test" in imaps.domains  # the alias relies on the same servers
    (missing,) = found.findings
    assert (missing.code, missing.subject, missing.severity) == (
        "ENDPOINT-NO-ADDRESS",
        f"gone.{DOMAIN}",
        Severity.ERROR,
    )
