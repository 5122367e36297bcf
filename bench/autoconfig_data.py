"""Seed data for ``bench/autoconfig.sh``: the same site and the same known users for every peer.

Writes into a work directory:

* ``ours/site.toml`` — ``examples/site.toml`` with its embedded directory moved to
  ``ours/users.sqlite`` (the script imports ``ours/users.csv`` into it with ``mailwarden users``);
* ``ours/users.csv`` — N known users (``bench00001@example.edu``, login ``b00001``, one alias);
* ``automx2/seed.json`` — automx2's JSON seed (format 2) for the same domains and servers;
* ``users.txt`` — the addresses the wrk script rotates through, one per line.

The automx2 seed is derived from the site model, not written by hand, so the two servers
describe the same service set: same host names, ports, TLS modes and server order.

usage: python -m bench.autoconfig_data WORKDIR [USERS]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mailwarden.site import load_site
from mailwarden.site.model import ServiceKind, Site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = ROOT / "examples" / "site.toml"
EXAMPLE_DIRECTORY_LINE = 'path = "../var/demo-users.sqlite"'
DEFAULT_USERS = 1000
PRIORITY_STEP = 10

# automx2 names POP3 "pop" and derives the TLS mode from the port (993/995/465 → SSL,
# anything else → STARTTLS), so only servers whose port tells their mode can be seeded.
AUTOMX2_TYPES: dict[ServiceKind, str] = {"imap": "imap", "pop3": "pop", "smtp": "smtp"}
AUTOMX2_IMPLICIT_PORTS = frozenset({465, 993, 995})


def site_text(directory: Path) -> str:
    """``examples/site.toml`` with the embedded directory at ``directory``."""
    text = EXAMPLE_SITE.read_text(encoding="utf-8")
    if EXAMPLE_DIRECTORY_LINE not in text:
        raise SystemExit(f"{EXAMPLE_SITE}: expected the line {EXAMPLE_DIRECTORY_LINE!r}")
    return text.replace(EXAMPLE_DIRECTORY_LINE, f"path = {json.dumps(str(directory))}")


def addresses(count: int, domain: str) -> list[str]:
    return [f"bench{i:05d}@{domain}" for i in range(1, count + 1)]


def users_csv(count: int, domain: str) -> str:
    """A users CSV for ``mailwarden users import``: login names differ from the addresses,
    so a response that carries the right login proves the directory was consulted."""
    lines = ["address,login,display_name,aliases,enabled"]
    for i, address in enumerate(addresses(count, domain), start=1):
        lines.append(f"{address},b{i:05d},Bench User {i},bench.user{i:05d}@{domain},yes")
    return "\n".join(lines) + "\n"


def automx2_seed(site: Site) -> dict[str, object]:
    """automx2's seed for the site's primary domain (with its aliases) and its service set."""
    view = site.domain(site.primary_domain)
    if view is None:
        raise SystemExit(f"{EXAMPLE_SITE}: primary domain {site.primary_domain} is not defined")
    servers: list[dict[str, object]] = []
    for kind, automx2_type in AUTOMX2_TYPES.items():
        for rank, server in enumerate(view.services.servers(kind), start=1):
            port = server.port_for(kind)
            implicit = port in AUTOMX2_IMPLICIT_PORTS
            if implicit != (server.tls == "implicit"):
                raise SystemExit(
                    f"{EXAMPLE_SITE}: {kind} {server.host}:{port} ({server.tls}) cannot be "
                    "expressed in automx2, which infers TLS from the port"
                )
            servers.append(
                {
                    "type": automx2_type,
                    "name": server.host,
                    "port": port,
                    "prio": rank * PRIORITY_STEP,
                }
            )
    return {
        "version": 2,
        "provider": site.organisation.name,
        "domains": [{"name": name} for name in (view.name, *view.config.aliases)],
        "servers": servers,
    }


def write(workdir: Path, count: int) -> None:
    ours = workdir / "ours"
    automx2 = workdir / "automx2"
    ours.mkdir(parents=True, exist_ok=True)
    automx2.mkdir(parents=True, exist_ok=True)
    (ours / "site.toml").write_text(site_text(ours / "users.sqlite"), encoding="utf-8")
    site = load_site(ours / "site.toml")
    domain = site.primary_domain
    (ours / "users.csv").write_text(users_csv(count, domain), encoding="utf-8")
    seed = json.dumps(automx2_seed(site), indent=2) + "\n"
    (automx2 / "seed.json").write_text(seed, encoding="utf-8")
    (workdir / "users.txt").write_text("\n".join(addresses(count, domain)) + "\n")


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    count = int(argv[1]) if len(argv) == 2 else DEFAULT_USERS
    if count < 1:
        print("USERS must be at least 1", file=sys.stderr)
        return 2
    write(Path(argv[0]), count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
