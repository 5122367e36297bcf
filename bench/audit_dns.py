"""The DNS part of ``mailwarden audit`` on 200 mail domains, against the same questions asked
with ``dig``.

A Knot DNS on a loopback high port serves 200 mail domains ``d001.dnsbench.test`` …, each with
an MX, an SPF record (an ``include`` chain shared by all, as a campus's SPF includes its
relays'), a DKIM key, a DMARC record sending reports to another organisation (authorised by its
``_report._dmarc`` record), a TLS-RPT record; two outbound addresses with reverse zones and a
block list with its test point. Twenty domains have an SPF record ending in ``+all`` and twenty
no DMARC record: the audit must report a problem on exactly those forty and on no other.

Timed, alternating, after one warm-up each:

- ours: ``mailwarden audit --config SITE --only spf,dkim,dmarc,mta-sts,tls-rpt,dnsbl,ptr
  --resolver KNOT --format json``, the whole process (Python start-up included); the target is
  at most 5 s;
- dig: the same questions (every name the checks ask, the include chain once per domain as a
  resolver-less script would) from one ``dig -f`` batch, one after another: the floor a shell
  script reaches, which reads and judges nothing.

usage: python -m bench.audit_dns [--runs N] [--domains N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.fixtures.knot import running_knot

ROOT = Path(__file__).resolve().parent.parent
MAILWARDEN = ROOT / ".venv" / "bin" / "mailwarden"
ZONE = "dnsbench.test"
REPORTS = "reports.example"
DNSBL = "dnsbl.example"
OUTBOUND = ("192.0.2.25", "192.0.2.26")
SELECTOR = "s2026"
TARGET_SECONDS = 5.0
CHECKS = "spf,dkim,dmarc,mta-sts,tls-rpt,dnsbl,ptr"


@dataclass(frozen=True)
class Domain:
    name: str
    kind: str
    """``good``, ``pass-all`` (SPF ends in +all) or ``no-dmarc``."""


def domains(count: int) -> list[Domain]:
    kinds = [
        "pass-all" if i % 10 == 3 else "no-dmarc" if i % 10 == 7 else "good" for i in range(count)
    ]
    return [Domain(f"d{i + 1:03d}.{ZONE}", kind) for i, kind in enumerate(kinds)]


def _txt(text: str) -> str:
    """A TXT value in zone-file form, split into strings of at most 255 characters."""
    parts = [text[i : i + 250] for i in range(0, len(text), 250)]
    return " ".join(f'"{part}"' for part in parts)


def dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def zones(mail: Sequence[Domain]) -> dict[str, str]:
    key = dkim_key()
    lines = [
        f"mx.{ZONE}. 300 IN A 192.0.2.10",
        f"mailout.{ZONE}. 300 IN A {OUTBOUND[0]}",
        f"mailout.{ZONE}. 300 IN A {OUTBOUND[1]}",
        f"_spf.{ZONE}. 300 IN TXT "
        + _txt(f"v=spf1 include:_relays.{ZONE} ip4:198.51.100.0/24 -all"),
        f"_relays.{ZONE}. 300 IN TXT {_txt('v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all')}",
    ]
    for domain in mail:
        name = domain.name
        spf = f"v=spf1 mx include:_spf.{ZONE} {'+all' if domain.kind == 'pass-all' else '-all'}"
        lines += [
            f"{name}. 300 IN MX 10 mx.{ZONE}.",
            f"{name}. 300 IN TXT {_txt(spf)}",
            f"{SELECTOR}._domainkey.{name}. 300 IN TXT {_txt('v=DKIM1; k=rsa; p=' + key)}",
            f"_smtp._tls.{name}. 300 IN TXT {_txt('v=TLSRPTv1; rua=mailto:tlsrpt@' + REPORTS)}",
        ]
        if domain.kind != "no-dmarc":
            dmarc = f"v=DMARC1; p=reject; rua=mailto:dmarc@{REPORTS}"
            lines.append(f"_dmarc.{name}. 300 IN TXT {_txt(dmarc)}")
    reports = [f'{d.name}._report._dmarc.{REPORTS}. 300 IN TXT "v=DMARC1"' for d in mail]
    reports.append(f"{REPORTS}. 300 IN MX 10 mx.{ZONE}.")
    reverse = [
        f"{address.split('.')[-1]}.2.0.192.in-addr.arpa. 300 IN PTR mailout.{ZONE}."
        for address in OUTBOUND
    ]
    dnsbl = [
        f"2.0.0.127.{DNSBL}. 300 IN A 127.0.0.2",
        f'2.0.0.127.{DNSBL}. 300 IN TXT "test point"',
    ]
    return {
        ZONE: "\n".join(lines) + "\n",
        REPORTS: "\n".join(reports) + "\n",
        "2.0.192.in-addr.arpa": "\n".join(reverse) + "\n",
        DNSBL: "\n".join(dnsbl) + "\n",
    }


def site_toml(mail: Sequence[Domain]) -> str:
    lines = [
        f'primary_domain = "{mail[0].name}"',
        "[organisation]",
        'name = "DNS benchmark"',
        'short_name = "DNS"',
        "[[services.main.imap]]",
        f'host = "mx.{ZONE}"',
        "[[services.main.smtp]]",
        f'host = "mx.{ZONE}"',
        "[audit]",
        f'dkim_selectors = ["{SELECTOR}"]',
        "dnsbl_rate = 1000",
    ]
    for address in OUTBOUND:
        lines += ["[[audit.outbound]]", f'address = "{address}"', f'helo = "mailout.{ZONE}"']
    lines += ["[[audit.dnsbl]]", f'zone = "{DNSBL}"', "weight = 10"]
    for domain in mail:
        lines += [f'[domains."{domain.name}"]', 'services = "main"']
    return "\n".join(lines) + "\n"


def dig_questions(mail: Sequence[Domain]) -> list[str]:
    """What the checks ask, as ``dig`` batch lines (the shared include chain once per domain:
    a script has no cache)."""
    questions: list[str] = []
    for domain in mail:
        name = domain.name
        questions += [
            f"{name} TXT", f"{name} MX", f"mx.{ZONE} A", f"mx.{ZONE} AAAA",
            f"_spf.{ZONE} TXT", f"_relays.{ZONE} TXT",
            f"{SELECTOR}._domainkey.{name} TXT", f"_dmarc.{name} TXT",
            f"{name}._report._dmarc.{REPORTS} TXT",
            f"_mta-sts.{name} TXT", f"_smtp._tls.{name} TXT",
        ]  # fmt: skip
    for address in OUTBOUND:
        reversed_name = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
        questions += [
            f"{reversed_name} PTR", f"mailout.{ZONE} A", f"mailout.{ZONE} AAAA",
            f"2.0.0.127.{DNSBL} A", f"1.0.0.127.{DNSBL} A",
            f"{'.'.join(reversed(address.split('.')))}.{DNSBL} A",
        ]  # fmt: skip
    return questions


def run_ours(site: Path, nameserver: str, out: Path) -> tuple[float, dict[str, Any]]:
    argv = [
        str(MAILWARDEN), "audit", "--config", str(site), "--only", CHECKS,
        "--resolver", nameserver, "--format", "json", "--output", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1, 2, 3) or not out.exists():
        sys.exit(f"mailwarden audit failed ({done.returncode}): {done.stderr.strip()}")
    return wall, json.loads(out.read_text(encoding="utf-8"))


def run_dig(batch: Path, nameserver: str) -> float:
    host, port = nameserver.rsplit(":", 1)
    argv = [
        "dig",
        f"@{host}",
        "-p",
        port,
        "+tries=1",
        "+time=2",
        "+noall",
        "+answer",
        "-f",
        str(batch),
    ]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        sys.exit(f"dig failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - started


def verdicts(report: dict[str, Any], mail: Sequence[Domain]) -> tuple[int, list[str]]:
    """How many domains got the expected verdict, and what was wrong with the others: a
    problem (warning or worse) on SPF for each ``pass-all`` domain and on DMARC for each
    ``no-dmarc`` one; no problem from spf, dkim, dmarc or tls-rpt on any other."""
    problems: dict[tuple[str, str], list[str]] = {}
    results = 0
    for result in report["results"]:
        if result["endpoint"] is not None:
            continue
        results += 1
        bad = [f["code"] for f in result["findings"] if f["severity"] in ("warning", "error")]
        problems.setdefault((result["check"], result["subject"]), []).extend(bad)
    wrong: list[str] = []
    for domain in mail:
        expected = {"pass-all": "spf", "no-dmarc": "dmarc"}.get(domain.kind)
        for check in ("spf", "dkim", "dmarc", "tls-rpt"):
            found = problems.get((check, domain.name), [])
            if (check == expected) != bool(found):
                wrong.append(f"{domain.name} ({domain.kind}) {check}: {found or 'nothing'}")
    right = len(mail) - len({line.split(" ")[0] for line in wrong})
    return right, wrong if results else ["no site-wide results at all"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--domains", type=int, default=200, help="mail domains (default 200)")
    parser.add_argument("--keep", type=Path, help="keep the lab's files in this folder")
    args = parser.parse_args(argv)
    if shutil.which("dig") is None:
        sys.exit("dig is missing: apt-get install bind9-dnsutils")
    mail = domains(args.domains)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="mw-dnsbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "site.toml"
    site.write_text(site_toml(mail), encoding="utf-8")
    batch = folder / "questions.txt"
    batch.write_text("\n".join(dig_questions(mail)) + "\n", encoding="utf-8")
    ours: list[float] = []
    digs: list[float] = []
    right_runs: list[int] = []
    wrong: list[str] = []
    with running_knot(zones(mail), folder) as knot:
        run_ours(site, knot.nameserver, folder / "warmup.json")
        run_dig(batch, knot.nameserver)
        for index in range(args.runs):
            order = ("ours", "dig") if index % 2 == 0 else ("dig", "ours")
            for tool in order:
                if tool == "ours":
                    wall, report = run_ours(site, knot.nameserver, folder / f"ours-{index}.json")
                    ours.append(wall)
                    right, wrong_now = verdicts(report, mail)
                    right_runs.append(right)
                    wrong = wrong or wrong_now
                else:
                    digs.append(run_dig(batch, knot.nameserver))
    ours_median, dig_median = statistics.median(ours), statistics.median(digs)
    questions = len(dig_questions(mail))
    print(f"== audit DNS part: {len(mail)} mail domains, median of {args.runs} runs ==")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| tool | wall time, median (min–max) | verdicts right |")
    print("| --- | --- | --- |")
    print(
        f"| mailwarden audit --only {CHECKS} | {ours_median:.2f} s "
        f"({min(ours):.2f}–{max(ours):.2f}) "
        f"| {min(right_runs)}/{len(mail)} |"
    )
    print(
        f"| dig -f, {questions} questions one after another | {dig_median:.2f} s "
        f"({min(digs):.2f}–{max(digs):.2f}) | judges nothing |"
    )
    met = "met" if ours_median <= TARGET_SECONDS else "NOT met"
    print(
        f"ours / target {TARGET_SECONDS:g} s: {ours_median / TARGET_SECONDS:.2f} ({met}); "
        f"ours / dig: {ours_median / dig_median:.2f}"
    )
    for line in wrong[:20]:
        print(f"  wrong: {line}")
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if not wrong and ours_median <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
