"""The Unbound fixture is a real validating resolver: AD on the signed zone, none on the
unsigned one, SERVFAIL when the trust anchor matches no key of the zone."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from tests.fixtures.knot import running_knot
from tests.fixtures.unbound import running_unbound, trust_anchors

pytestmark = pytest.mark.slow  # starts knotd and unbound

SIGNED = "signed.test"
PLAIN = "plain.test"
ZONES = {
    SIGNED: "www 300 IN A 192.0.2.1\n",
    PLAIN: "www 300 IN A 192.0.2.2\n",
}


def test_validates_the_signed_zone_only(tmp_path: Path) -> None:
    with (
        running_knot(ZONES, tmp_path, signed=[SIGNED]) as knot,
        running_unbound(knot, ZONES, tmp_path, signed=[SIGNED]) as unbound,
    ):
        direct = knot.query(f"www.{SIGNED}", "A", dnssec=True)
        assert not direct.flags & dns.flags.AD  # an authoritative server never validates
        signed = unbound.query(f"www.{SIGNED}", "A")
        assert signed.rcode() == dns.rcode.NOERROR
        assert signed.flags & dns.flags.AD
        assert "192.0.2.1" in signed.answer[0].to_text()
        plain = unbound.query(f"www.{PLAIN}", "A")
        assert plain.rcode() == dns.rcode.NOERROR
        assert not plain.flags & dns.flags.AD
        nodata = unbound.query(f"www.{SIGNED}", "TLSA")
        assert nodata.rcode() == dns.rcode.NOERROR
        assert not nodata.answer
        assert nodata.flags & dns.flags.AD  # NSEC proves the absence
    assert not Path(f"/proc/{unbound.pid}").exists()


def test_wrong_trust_anchor_is_servfail(tmp_path: Path) -> None:
    zones = {SIGNED: ZONES[SIGNED]}
    with running_knot(zones, tmp_path / "other", signed=[SIGNED]) as other:
        foreign = trust_anchors(other, [SIGNED])
    with (
        running_knot(zones, tmp_path, signed=[SIGNED]) as knot,
        running_unbound(knot, zones, tmp_path, signed=[SIGNED], anchors=foreign) as unbound,
    ):
        answer = unbound.query(f"www.{SIGNED}", "A")
        assert answer.rcode() == dns.rcode.SERVFAIL
