"""The records ``mailwarden dns records`` writes, judged against the site they come from.

Expectations are derived from the site model (its servers, TLS modes, order, public host) by
the helpers below, which restate the publishing rules independently of the implementation; a
few hand-written sites also pin exact records. Zone text goes through the real
``named-checkzone`` for a handful of sites and through dnspython's zone parser for every site
Hypothesis generates.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.discovery.records import (
    MAX_TTL,
    DomainRecords,
    Record,
    certificate_plans,
    check_ttl,
    render_zone,
    to_json,
    wanted_records,
)
from mailwarden.errors import InputError
from mailwarden.site.model import Site
from tests.fixtures.knot import check_zone, synthetic_header
from tests.fixtures.sites import sites

LABELS = {
    ("imap", "implicit"): "_imaps",
    ("imap", "starttls"): "_imap",
    ("pop3", "implicit"): "_pop3s",
    ("pop3", "starttls"): "_pop3",
    ("smtp", "implicit"): "_submissions",
    ("smtp", "starttls"): "_submission",
}
NOT_AVAILABLE = (0, 0, 0, ".")


def make_site(**overrides: Any) -> Site:
    """A small valid site; ``overrides`` replace top-level keys."""
    data: dict[str, Any] = {
        "organisation": {"name": "Example", "short_name": "Ex"},
        "primary_domain": "example.org",
        "services": {
            "main": {
                "imap": [{"host": "imap.example.org", "tls": "implicit"}],
                "smtp": [{"host": "smtp.example.org", "tls": "implicit"}],
            }
        },
        "domains": {"example.org": {"services": "main"}},
    }
    data.update(overrides)
    return Site.model_validate(data)


def public_host(site: Site) -> str:
    return (site.server.public_host or f"autodiscover.{site.primary_domain}") + "."


def at(block: DomainRecords, name: str, rtype: str | None = None) -> list[Record]:
    return [r for r in block.records if r.name == name and rtype in (None, r.rtype)]


def srv_values(block: DomainRecords, label: str) -> list[tuple[int, int, int, str]]:
    values = []
    for record in at(block, f"{label}._tcp.{block.domain}.", "SRV"):
        priority, weight, port, target = record.data.split()
        values.append((int(priority), int(weight), int(port), target))
    return sorted(values)


def blocks_by_name(site: Site) -> dict[str, DomainRecords]:
    return {block.domain: block for block in wanted_records(site)}


def assert_mail_srv(site: Site, block: DomainRecords) -> None:
    """RFC 6186/8314 records of one block, restated from the site's services."""
    view = site.domain(block.domain)
    assert view is not None
    if view.config.moved_to is not None:
        assert not any(r.name.startswith(tuple(LABELS.values())) for r in block.records)
        return
    services = view.services
    priorities: dict[tuple[str, str], list[int]] = {}
    for (kind, tls), label in LABELS.items():
        want: list[tuple[int, str]] = []
        for server in services.servers(kind):  # type: ignore[arg-type]
            entry = (server.port_for(kind), server.host + ".")
            if server.tls == tls and entry not in want:
                want.append(entry)
        got = srv_values(block, label)
        if not want:
            assert got == [NOT_AVAILABLE], (block.domain, label)
            continue
        # sorted by priority, the targets come in the site's order; priorities all differ
        assert [(port, target) for _, _, port, target in got] == want, (block.domain, label)
        assert len({p for p, _, _, _ in got}) == len(got)
        assert all(weight == 0 for _, weight, _, _ in got)
        priorities[(kind, tls)] = [p for p, _, _, _ in got]
    for kind in ("imap", "pop3", "smtp"):
        implicit, starttls = priorities.get((kind, "implicit")), priorities.get((kind, "starttls"))
        if implicit and starttls:
            assert max(implicit) < min(starttls), (block.domain, kind)
    first = services.incoming_first
    other = "pop3" if first == "imap" else "imap"
    firsts = [p for (k, _), ps in priorities.items() if k == first for p in ps]
    others = [p for (k, _), ps in priorities.items() if k == other for p in ps]
    if firsts and others:
        assert max(firsts) < min(others), block.domain
    incoming = [p for (k, _), ps in priorities.items() if k != "smtp" for p in ps]
    assert len(set(incoming)) == len(incoming), "one priority scale across IMAP and POP3"


def assert_autoconfig(site: Site, block: DomainRecords) -> None:
    """autoconfig./autodiscover. names and the SRV route of one block."""
    view = site.domain(block.domain)
    assert view is not None
    host = public_host(site)
    addresses = set(site.server.public_addresses)
    names = [f"autoconfig.{block.domain}."]
    if view.config.autodiscover:
        names.append(f"autodiscover.{block.domain}.")
        assert srv_values(block, "_autodiscover") == [(0, 0, 443, host)]
    else:
        assert srv_values(block, "_autodiscover") == []
        other = f"autodiscover.{block.domain}."
        if other != host:
            assert at(block, other) == []
    for name in names:
        records = at(block, name)
        if name == host:
            assert not at(block, name, "CNAME"), "a CNAME to itself"
            assert {r.data for r in records} == addresses
            if not addresses:
                assert host in block.needs_address
        elif addresses:
            assert {r.data for r in records} == addresses
            for record in records:
                version = ipaddress.ip_address(record.data).version
                assert record.rtype == ("AAAA" if version == 6 else "A")
        else:
            assert [(r.rtype, r.data) for r in records] == [("CNAME", host)]


def assert_site(site: Site, blocks: tuple[DomainRecords, ...]) -> None:
    assert blocks[0].domain == site.primary_domain
    assert sorted(b.domain for b in blocks) == site.served_names()
    for block in blocks:
        assert_autoconfig(site, block)
        assert_mail_srv(site, block)
        for record in block.records:
            assert record.name.endswith(".")
            assert record.name.isascii()
            assert not (record.rtype == "CNAME" and record.data == record.name)
    host = public_host(site)
    host_records = [r for b in blocks for r in b.records if r.name == host]
    needing = [b.domain for b in blocks if host in b.needs_address]
    if site.server.public_addresses:
        assert sorted(r.data for r in host_records) == sorted(site.server.public_addresses)
        assert needing == []
    else:
        assert host_records == []
        assert len(needing) == 1, "the host's missing addresses are named exactly once"
    # CNAME and other data never share a name (RFC 1034 §3.6.2)
    types_at: dict[str, set[str]] = defaultdict(set)
    for block in blocks:
        for record in block.records:
            types_at[record.name].add(record.rtype)
    for name, types in types_at.items():
        assert "CNAME" not in types or types == {"CNAME"}, name


def test_example_site(example_site: Site) -> None:
    blocks = wanted_records(example_site)
    assert_site(example_site, blocks)
    by_name = {b.domain: b for b in blocks}
    assert by_name["example.edu"].kind == "domain"
    assert by_name["uni-example.de"].kind == "alias"
    assert by_name["uni-example.de"].canonical == "example.edu"
    assert by_name["alumni.example.edu"].kind == "moved"
    # the public host is autodiscover.example.edu: that name gets no record, only the request
    # for its addresses, and the other domains' names point at it
    main = by_name["example.edu"]
    assert at(main, "autodiscover.example.edu.") == []
    assert main.needs_address == ("autodiscover.example.edu.",)
    assert [(r.rtype, r.data) for r in at(main, "autoconfig.example.edu.")] == [
        ("CNAME", "autodiscover.example.edu.")
    ]
    # aliases publish the canonical domain's services
    for label in LABELS.values():
        assert srv_values(by_name["uni-example.de"], label) == srv_values(main, label)
    # campus: IMAP 993 implicit, IMAP 143 STARTTLS, POP3 995; SMTP 465, then 587
    assert srv_values(main, "_imaps") == [(0, 0, 993, "imap.example.edu.")]
    assert srv_values(main, "_imap") == [(10, 0, 143, "imap.example.edu.")]
    assert srv_values(main, "_pop3s") == [(20, 0, 995, "pop.example.edu.")]
    assert srv_values(main, "_pop3") == [NOT_AVAILABLE]
    assert srv_values(main, "_submissions") == [(0, 0, 465, "smtp.example.edu.")]
    assert srv_values(main, "_submission") == [(10, 0, 587, "smtp.example.edu.")]
    physics = by_name["physics.example.org"]
    assert srv_values(physics, "_imap") == [NOT_AVAILABLE]
    assert srv_values(physics, "_submissions") == [NOT_AVAILABLE]
    assert srv_values(physics, "_submission") == [(0, 0, 587, "mail.physics.example.org.")]
    moved = by_name["alumni.example.edu"]
    assert {r.name for r in moved.records} == {
        "autoconfig.alumni.example.edu.",
        "autodiscover.alumni.example.edu.",
        "_autodiscover._tcp.alumni.example.edu.",
    }
    assert any("alumni-mail.example.net" in note for note in moved.notes)


def test_public_addresses_and_host_inside_a_domain() -> None:
    """public_host is autoconfig.example.org: A/AAAA there, never a CNAME to itself."""
    site = make_site(
        server={
            "public_host": "autoconfig.example.org",
            "public_addresses": ["192.0.2.10", "2001:DB8::10"],
        },
        domains={
            "example.org": {"services": "main", "aliases": ["example.com"]},
            "example.net": {"services": "main"},
        },
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    by_name = {b.domain: b for b in blocks}
    host_records = at(by_name["example.org"], "autoconfig.example.org.")
    assert sorted((r.rtype, r.data, r.role) for r in host_records) == [
        ("A", "192.0.2.10", "host"),
        ("AAAA", "2001:db8::10", "host"),
    ]
    assert sorted(
        (r.rtype, r.data) for r in at(by_name["example.net"], "autodiscover.example.net.")
    ) == [
        ("A", "192.0.2.10"),
        ("AAAA", "2001:db8::10"),
    ]
    assert not any(r.rtype == "CNAME" for b in blocks for r in b.records)
    assert all(b.needs_address == () for b in blocks)
    assert srv_values(by_name["example.com"], "_autodiscover") == [
        (0, 0, 443, "autoconfig.example.org.")
    ]


def test_public_host_outside_the_domains_is_listed_with_the_primary_domain() -> None:
    site = make_site(
        primary_domain="example.net",
        server={"public_host": "setup.hoster.example", "public_addresses": ["198.51.100.7"]},
        domains={"example.org": {"services": "main"}, "example.net": {"services": "main"}},
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    assert blocks[0].domain == "example.net"
    assert [(r.name, r.rtype, r.data) for r in blocks[0].records if r.role == "host"] == [
        ("setup.hoster.example.", "A", "198.51.100.7")
    ]


def test_default_public_host_is_autodiscover_of_the_primary_domain() -> None:
    site = make_site(
        primary_domain="example.net",
        domains={"example.org": {"services": "main"}, "example.net": {"services": "main"}},
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    by_name = {b.domain: b for b in blocks}
    assert by_name["example.net"].needs_address == ("autodiscover.example.net.",)
    assert [r.data for r in at(by_name["example.org"], "autoconfig.example.org.")] == [
        "autodiscover.example.net."
    ]


def test_several_imap_servers_pop3_first_and_cleartext() -> None:
    """Order kept within a TLS mode, implicit before STARTTLS, POP3 before IMAP when the site
    says so, and a cleartext-only server published as not available."""
    site = make_site(
        services={
            "main": {
                "imap": [
                    {"host": "imap-b.example.org", "tls": "starttls"},
                    {"host": "imap-a.example.org", "tls": "implicit"},
                    {"host": "imap-c.example.org", "tls": "implicit", "port": 10993},
                    {"host": "imap-a.example.org", "tls": "starttls"},
                ],
                "pop3": [{"host": "pop.example.org", "tls": "implicit"}],
                "smtp": [{"host": "smtp.example.org", "tls": "none", "port": 587}],
                "incoming_first": "pop3",
            }
        }
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    block = blocks[0]
    assert srv_values(block, "_pop3s") == [(0, 0, 995, "pop.example.org.")]
    assert srv_values(block, "_pop3") == [NOT_AVAILABLE]
    assert srv_values(block, "_imaps") == [
        (10, 0, 993, "imap-a.example.org."),
        (20, 0, 10993, "imap-c.example.org."),
    ]
    assert srv_values(block, "_imap") == [
        (30, 0, 143, "imap-b.example.org."),
        (40, 0, 143, "imap-a.example.org."),
    ]
    assert srv_values(block, "_submission") == [NOT_AVAILABLE]
    assert srv_values(block, "_submissions") == [NOT_AVAILABLE]
    assert any("smtp.example.org:587" in note and "RFC 8314" in note for note in block.notes)


def test_no_pop3_and_autodiscover_off() -> None:
    site = make_site(
        domains={
            "example.org": {"services": "main"},
            "quiet.example.org": {"services": "main", "autodiscover": False},
        }
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    quiet = {b.domain: b for b in blocks}["quiet.example.org"]
    assert srv_values(quiet, "_pop3s") == [NOT_AVAILABLE]
    assert srv_values(quiet, "_pop3") == [NOT_AVAILABLE]
    assert at(quiet, "autodiscover.quiet.example.org.") == []
    assert at(quiet, "_autodiscover._tcp.quiet.example.org.") == []
    assert at(quiet, "autoconfig.quiet.example.org.") != []
    plans = {p.strategy: p for p in certificate_plans(blocks)}
    assert "autodiscover.quiet.example.org" not in plans["per-domain"].names
    assert "autoconfig.quiet.example.org" in plans["per-domain"].names


def test_idn_domains_are_a_labels_and_zone_comments_show_the_u_label() -> None:
    site = make_site(
        primary_domain="bücher.example",
        domains={"Bücher.example": {"services": "main", "aliases": ["münchen.example"]}},
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    assert [b.domain for b in blocks] == ["xn--bcher-kva.example", "xn--mnchen-3ya.example"]
    assert blocks[1].unicode == "münchen.example"
    zone = render_zone(blocks)
    lines = [" ".join(line.split(";", 1)[0].split()) for line in zone.splitlines()]
    assert (
        "autoconfig.xn--mnchen-3ya.example. 3600 IN CNAME autodiscover.xn--bcher-kva.example."
        in lines
    )
    assert "; ==== xn--mnchen-3ya.example (münchen.example) ====" in zone
    for line in zone.splitlines():
        assert line.split(";", 1)[0].isascii(), line


def test_moved_domain_and_its_alias_keep_only_the_redirect_names() -> None:
    site = make_site(
        domains={
            "example.org": {"services": "main"},
            "old.example.org": {
                "services": "main",
                "aliases": ["old.example.com"],
                "moved_to": "new.example",
            },
        }
    )
    blocks = wanted_records(site)
    assert_site(site, blocks)
    for block in blocks[1:]:
        assert block.kind == "moved"
        assert block.moved_to == "new.example"
        assert {r.role for r in block.records} == {"autoconfig", "autodiscover", "autodiscover-srv"}


def test_ttl_is_on_every_record_and_bounded() -> None:
    site = make_site()
    assert {r.ttl for b in wanted_records(site, ttl=300) for r in b.records} == {300}
    assert check_ttl(0) == 0
    assert check_ttl(MAX_TTL) == MAX_TTL
    for bad in (-1, MAX_TTL + 1):
        with pytest.raises(InputError, match="TTL"):
            wanted_records(site, ttl=bad)
    zone = render_zone(wanted_records(site, ttl=300))
    assert "$TTL" not in zone
    record_lines = [ln for ln in zone.splitlines() if ln and not ln.startswith(";")]
    assert record_lines
    assert all(ln.split()[1] == "300" for ln in record_lines)


def test_certificate_plans(example_site: Site) -> None:
    blocks = wanted_records(example_site)
    plans = {p.strategy: p for p in certificate_plans(blocks)}
    assert set(plans) == {"per-domain", "srv", "plain-http"}
    served = example_site.served_names()
    per_domain = plans["per-domain"]
    assert per_domain.names[0] == "autodiscover.example.edu"
    for name in served:
        assert f"autoconfig.{name}" in per_domain.names
        assert f"autodiscover.{name}" in per_domain.names
        assert name in per_domain.elsewhere
        assert name not in per_domain.names, "the bare domain is the web server's business"
    assert "web server" in per_domain.note
    assert plans["srv"].names == ("autodiscover.example.edu",)
    assert "asking the user" in plans["srv"].note
    assert plans["plain-http"].names == ("autodiscover.example.edu",)
    assert "autoconfig.uni-example.de" in plans["plain-http"].plain_http
    assert "confirm" in plans["plain-http"].note


def test_json_carries_every_record(example_site: Site) -> None:
    blocks = wanted_records(example_site)
    data = to_json(blocks)
    assert data["public_host"] == "autodiscover.example.edu."
    listed = [
        (r["name"], r["type"], r["ttl"], r["data"]) for d in data["domains"] for r in d["records"]
    ]
    assert listed == [(r.name, r.rtype, r.ttl, r.data) for b in blocks for r in b.records]
    assert "imap.example.edu." in data["srv_targets"]
    assert data["domains"][0]["needs_address"] == ["autodiscover.example.edu."]


HAND_MADE = {
    "aliases-and-moved": lambda: make_site(
        domains={
            "example.org": {"services": "main", "aliases": ["example.com", "mail.example.org"]},
            "old.example.org": {"services": "main", "moved_to": "new.example"},
        }
    ),
    "addresses-v4-v6": lambda: make_site(
        server={
            "public_host": "autodiscover.example.org",
            "public_addresses": ["192.0.2.10", "2001:db8::10"],
        },
        domains={"example.org": {"services": "main"}, "bücher.example": {"services": "main"}},
    ),
    "pop3-first-cleartext": lambda: make_site(
        services={
            "main": {
                "imap": [{"host": "imap.example.org", "tls": "starttls"}],
                "pop3": [
                    {"host": "pop.example.org", "tls": "implicit"},
                    {"host": "pop.example.org", "tls": "none"},
                ],
                "smtp": [{"host": "smtp.example.org", "tls": "starttls"}],
                "incoming_first": "pop3",
            }
        }
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_named_checkzone_accepts_hand_made_sites(name: str) -> None:
    zone = render_zone(wanted_records(HAND_MADE[name]()))
    accepted, output = check_zone(".", zone)
    assert accepted, output


def test_named_checkzone_accepts_the_example_site(example_site: Site) -> None:
    accepted, output = check_zone(".", render_zone(wanted_records(example_site)))
    assert accepted, output


def test_check_zone_would_notice_a_broken_line(example_site: Site) -> None:
    """The zone check above can fail: the same text with one record damaged is refused."""
    zone = render_zone(wanted_records(example_site))
    broken = zone.replace("IN SRV   0 0 993", "IN SRV   0 0 nine-nine-three", 1)
    assert broken != zone
    accepted, _ = check_zone(".", broken)
    assert not accepted


@st.composite
def discovery_sites(draw: st.DrawFn) -> Site:
    """Generated sites with a public host, addresses, moved and autodiscover-less domains."""
    site = draw(sites())
    data = site.model_dump(mode="json")
    served = site.served_names()
    host = draw(
        st.sampled_from(
            [
                None,
                f"autoconfig.{draw(st.sampled_from(served))}",
                f"autodiscover.{draw(st.sampled_from(served))}",
                site.primary_domain,
                "setup.hoster.example",
            ]
        )
    )
    addresses = draw(
        st.sampled_from([[], ["192.0.2.1"], ["2001:db8::1"], ["192.0.2.1", "2001:db8::1"]])
    )
    data["server"]["public_host"] = host
    data["server"]["public_addresses"] = addresses
    for domain in data["domains"].values():
        domain["autodiscover"] = draw(st.booleans())
        if draw(st.integers(0, 3)) == 0:
            domain["moved_to"] = "moved.example"
    return Site.model_validate(data)


@given(discovery_sites(), st.integers(0, MAX_TTL))
def test_every_generated_site_gives_a_valid_zone(site: Site, ttl: int) -> None:
    blocks = wanted_records(site, ttl=ttl)
    assert_site(site, blocks)
    text = synthetic_header(".") + render_zone(blocks)
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=True)
    # every record is in the parsed zone exactly as written, and nothing else
    count = 0
    for block in blocks:
        for record in block.records:
            rdataset = zone.get_rdataset(dns.name.from_text(record.name), record.rtype)
            assert rdataset is not None, record
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.from_text(record.rtype), record.data
            )
            assert rdata in rdataset, record
            assert rdataset.ttl == ttl
            count += 1
    in_zone = sum(
        len(rdataset)
        for _name, rdataset in zone.iterate_rdatasets()
        if rdataset.rdtype not in (dns.rdatatype.SOA, dns.rdatatype.NS)
    )
    synthetic = 1  # the synthetic name server's own address
    assert in_zone - synthetic == count


def test_names_longer_than_dns_allows_are_left_out_with_a_note() -> None:
    """A 239-character domain is valid, but _submissions._tcp.<it> is not: skipped, said."""
    long_domain = ".".join(["a" * 58] * 4) + ".org"  # 4 × 58 + 3 dots + 4 = 239 characters
    site = make_site(primary_domain=long_domain, domains={long_domain: {"services": "main"}})
    block = wanted_records(site)[0]
    too_long = [r.name for r in block.records if len(r.name.rstrip(".")) > 253]
    assert too_long == []
    assert at(block, f"autoconfig.{long_domain}.") != []  # 250 characters: fits
    assert at(block, f"_imaps._tcp.{long_domain}.") != []  # 251 characters: fits
    assert at(block, f"_submissions._tcp.{long_domain}.") == []
    assert any(
        "_submissions._tcp" in note and "longer than DNS allows" in note for note in block.notes
    )
    accepted, output = check_zone(".", render_zone((block,)))
    assert accepted, output
