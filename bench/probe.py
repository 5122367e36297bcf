"""One address probed: ``mailwarden probe`` against the same checks made one after another with
curl, dig and openssl.

The peer is what a mail administrator does today without the probe: a shell script that asks
the DNS questions with ``dig``, sends every HTTP request the mail clients send with ``curl`` and
opens every mail server with ``openssl s_client``, one command after another. Its list of
commands is taken from one JSON run of our probe (every HTTP step, every DNS step, every mail
server, plus the A/AAAA lookups our probe makes once per host name), so both sides do the same
network work. The peer stops there: it reads no document, follows nothing it finds and compares
nothing with the site file; ours does all of that, and its figure includes the Python start-up.

The discovery lab of the test suite (``tests/fixtures/discovery_lab.py``: Knot DNS, nginx in
front of ``mailwarden serve``, Dovecot, Postfix, on loopback high ports) is started once; then
RUNS rounds, ours and the peer alternating (which of the two goes first alternates as well, so
slow drifts of a shared machine hit both). Every answer is checked: our probe must exit 0, each
curl must get the HTTP status our probe got, each dig the same kind of answer, each openssl a
verified certificate and the server's capability reply.

usage: python -m bench.probe [--runs N] [--warmup N] [--timeout S] [--json FILE] [--show-commands]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.discovery_lab import ADDRESS, running_lab

from mailwarden.discovery.net import ConnectTo, parse_connect_to
from mailwarden.discovery.pox import request_body
from mailwarden.discovery.resolver import NameServer, parse_nameserver

TARGET_MS = 2000.0
PEER_TOOLS = ("curl", "dig", "openssl")
CAPABILITY_COMMANDS = {
    # what the peer types once the TLS session is up, and a sign the server answered it
    "imap": ("a CAPABILITY\na LOGOUT\n", "AUTH="),
    "pop3": ("CAPA\nQUIT\n", "SASL"),
    "smtp": ("EHLO bench.example.test\nQUIT\n", "AUTH"),
}


class PeerError(Exception):
    """A peer command did not do what our probe's step did: the comparison would be unfair."""


@dataclass(frozen=True)
class HttpStep:
    method: str
    url: str
    status: int | None
    """What our probe got (None: no HTTP answer at all)."""


@dataclass(frozen=True)
class DnsStep:
    name: str
    rdtype: str
    answered: bool


@dataclass(frozen=True)
class ServerStep:
    kind: str
    host: str
    port: int
    tls: str


@dataclass(frozen=True)
class Plan:
    """What our probe did on the network, in the order of its report."""

    dns: tuple[DnsStep, ...]
    http: tuple[HttpStep, ...]
    servers: tuple[ServerStep, ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host name our probe connected to (it resolves each once, A and AAAA)."""
        names: dict[str, None] = {}
        for step in self.http:
            names[host_and_port(step.url)[0]] = None
        for server in self.servers:
            names[server.host.rstrip(".").lower()] = None
        return tuple(names)


@dataclass(frozen=True)
class Lab:
    nameserver: NameServer
    ca_file: Path
    rules: tuple[ConnectTo, ...]
    rule_texts: tuple[str, ...]
    pox_body: Path
    timeout: float


@dataclass
class PeerRun:
    wall_ms: float
    ms_by_tool: dict[str, float] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


@dataclass
class Round:
    ours_wall_ms: float
    ours_probe_ms: float
    ours_steps_sum_ms: float
    peer_wall_ms: float
    peer_ms_by_tool: dict[str, float]


def host_and_port(url: str) -> tuple[str, int]:
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    default = 443 if scheme.lower() == "https" else 80
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        return host, int(tail[1:]) if tail.startswith(":") else default
    host, sep, port = netloc.partition(":")
    return host.rstrip(".").lower(), int(port) if sep and port else default


def plan_from_report(report: Mapping[str, Any]) -> Plan:
    dns: list[DnsStep] = []
    http: list[HttpStep] = []
    for client in report["clients"]:
        for step in client["steps"]:
            words = str(step["action"]).split()
            target = str(step["target"])
            if step["outcome"] == "skipped":
                continue
            if target.startswith(("http://", "https://")) and words[-1] in ("GET", "POST"):
                status = step["status"]
                http.append(HttpStep(words[-1], target, None if status is None else int(status)))
            elif len(words) >= 2 and words[-2] == "DNS":
                dns.append(DnsStep(target, words[-1], step["outcome"] == "ok"))
    servers = tuple(
        ServerStep(str(s["kind"]), str(s["host"]), int(s["port"]), str(s["tls"]))
        for s in report["servers"]
    )
    return Plan(tuple(dns), tuple(http), servers)


def steps_sum_ms(report: Mapping[str, Any]) -> float:
    """Our steps' times added up: what the probe would take doing them one after another."""
    steps = [s for c in report["clients"] for s in c["steps"]]
    steps += [s for server in report["servers"] for s in server["steps"]]
    return float(sum(float(s["ms"]) for s in steps))


def rewrite(lab: Lab, host: str, port: int) -> tuple[str, int]:
    for rule in lab.rules:
        if rule.matches(host, port):
            return rule.to_host or host, rule.to_port or port
    return host, port


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Peer:
    """The sequential script: each command a process of its own, as a shell runs them."""

    def __init__(self, plan: Plan, lab: Lab) -> None:
        self.plan = plan
        self.lab = lab
        self.run_record: PeerRun = PeerRun(0.0)

    def _exec(self, tool: str, argv: list[str], stdin: str | None = None) -> tuple[int, str]:
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.lab.timeout * 3,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PeerError(
                f"{shlex.join(argv)}: no end after {self.lab.timeout * 3:g} s"
            ) from None
        spent = (time.perf_counter() - started) * 1000
        by_tool = self.run_record.ms_by_tool
        by_tool[tool] = by_tool.get(tool, 0.0) + spent
        typed = "printf " + shlex.quote(stdin.replace("\n", "\\n")) + " | " if stdin else ""
        self.run_record.commands.append(typed + shlex.join(argv))
        return proc.returncode, proc.stdout + proc.stderr

    def _dig(self, name: str, rdtype: str, *short: str) -> tuple[int, str]:
        server = self.lab.nameserver
        argv = ["dig", f"@{server.address}", "-p", str(server.port)]
        argv += ["+tries=1", f"+time={max(1, round(self.lab.timeout))}", *short, name, rdtype]
        return self._exec("dig", argv)

    def dns_step(self, step: DnsStep) -> None:
        code, out = self._dig(step.name, step.rdtype)
        status = re.search(r"status: (\w+)", out)
        answers = re.search(r"ANSWER: (\d+)", out)
        if step.answered and (
            code != 0
            or status is None
            or status.group(1) != "NOERROR"
            or answers is None
            or int(answers.group(1)) == 0
        ):
            raise PeerError(f"dig {step.name} {step.rdtype}: no answer where our probe had one")

    def addresses(self, host: str) -> list[str]:
        """AAAA then A, as our probe tries them."""
        found: list[str] = []
        for rdtype in ("AAAA", "A"):
            _code, out = self._dig(host, rdtype, "+short")
            found += [line for line in out.split() if is_ip(line)]
        return found

    def curl(self, step: HttpStep, addresses: Mapping[str, list[str]]) -> None:
        host, port = host_and_port(step.url)
        target, target_port = rewrite(self.lab, host, port)
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"]
        argv += ["--max-time", f"{self.lab.timeout:g}", "--cacert", str(self.lab.ca_file)]
        for rule in self.lab.rule_texts:
            argv += ["--connect-to", rule]
        if not is_ip(target) and addresses.get(target):
            # the names live in the lab's DNS only: hand curl what dig found there
            argv += ["--resolve", f"{target}:{target_port}:{bracketed(addresses[target][0])}"]
        if step.method == "POST":
            argv += ["-X", "POST", "--data-binary", f"@{self.lab.pox_body}"]
            argv += ["-H", "Content-Type: text/xml"]
        argv.append(step.url)
        code, out = self._exec("curl", argv)
        got = out.strip()[-3:]
        if step.status is not None and (code != 0 or got != str(step.status)):
            raise PeerError(
                f"curl {step.method} {step.url}: {out.strip()[:200]!r} (exit {code}), "
                f"our probe got HTTP {step.status}"
            )

    def s_client(self, server: ServerStep, addresses: Mapping[str, list[str]]) -> None:
        if server.kind not in CAPABILITY_COMMANDS or server.tls not in ("implicit", "starttls"):
            raise PeerError(f"{server.kind} with tls={server.tls}: no openssl command for it")
        host = server.host.rstrip(".").lower()
        target, port = rewrite(self.lab, host, server.port)
        address = target if is_ip(target) else (addresses.get(target) or [target])[0]
        argv = ["openssl", "s_client", "-connect", f"{bracketed(address)}:{port}"]
        argv += ["-servername", host, "-verify_hostname", host, "-verify_return_error"]
        argv += ["-CAfile", str(self.lab.ca_file), "-crlf", "-ign_eof"]
        if server.tls == "starttls":
            argv += ["-starttls", server.kind]
            if server.kind == "smtp":
                argv += ["-name", "bench.example.test"]
        typed, answered = CAPABILITY_COMMANDS[server.kind]
        code, out = self._exec("openssl", argv, typed)
        if code != 0 or "Verify return code: 0 (ok)" not in out or answered not in out:
            last = " | ".join(out.strip().splitlines()[-3:])
            raise PeerError(f"openssl s_client {server.kind} {host}:{server.port}: {last[:300]}")

    def run(self) -> PeerRun:
        self.run_record = PeerRun(0.0)
        started = time.perf_counter()
        for step in self.plan.dns:
            self.dns_step(step)
        addresses = {host: self.addresses(host) for host in self.plan.hosts}
        for http in self.plan.http:
            self.curl(http, addresses)
        for server in self.plan.servers:
            self.s_client(server, addresses)
        self.run_record.wall_ms = (time.perf_counter() - started) * 1000
        return self.run_record


def run_ours(argv: Sequence[str], timeout: float) -> tuple[float, dict[str, Any]]:
    """Our CLI as a subprocess: wall time in ms (interpreter start-up included) and its report."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"mailwarden probe: no end after {timeout:g} s") from None
    wall = (time.perf_counter() - started) * 1000
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(
            f"mailwarden probe exited {proc.returncode} without a JSON report: "
            f"{proc.stderr.strip()[-500:]}"
        ) from None
    if proc.returncode != 0:
        codes = [f"{f.get('code')}: {f.get('message')}" for f in report.get("findings", [])]
        raise SystemExit(f"mailwarden probe exited {proc.returncode} on the lab: {codes[:5]}")
    return wall, report


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text(encoding="ascii").split()[0])


def mailwarden_executable() -> str:
    beside = Path(sys.executable).parent / "mailwarden"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mailwarden")
    if found is None:
        raise SystemExit("no mailwarden command next to this Python or on PATH: pip install -e .")
    return found


def check_tools() -> None:
    missing = [tool for tool in PEER_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: bash scripts/install-debian-packages.sh "
            "packaging/debian-bench.txt"
        )


@contextmanager
def lab_probe(folder: Path, timeout: float) -> Iterator[tuple[list[str], Lab]]:
    """The lab up; our CLI's arguments for it and what the peer needs to reach it."""
    with running_lab(folder / "lab") as lab, lab.running(folder / "dns") as (knot, nginx):
        args = lab.probe_args(knot, nginx)
        rule_texts = tuple(args[i + 1] for i, a in enumerate(args) if a == "--connect-to")
        pox = folder / "request.xml"
        pox.write_bytes(request_body(ADDRESS))
        peer_lab = Lab(
            parse_nameserver(knot.nameserver),
            lab.ca.root,
            tuple(parse_connect_to(text) for text in rule_texts),
            rule_texts,
            pox,
            timeout,
        )
        ours = [mailwarden_executable(), "probe", ADDRESS, "--config", str(lab.site_file)]
        ours += [*args, "--timeout", f"{timeout:g}", "--format", "json"]
        yield ours, peer_lab


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):6.0f} ms   {min(values):.0f}–{max(values):.0f}"


def summary(plan: Plan, rounds: Sequence[Round], loads: tuple[float, float], warmup: int) -> str:
    ours = [r.ours_wall_ms for r in rounds]
    probe_ms = [r.ours_probe_ms for r in rounds]
    peer = [r.peer_wall_ms for r in rounds]
    startup = [r.ours_wall_ms - r.ours_probe_ms for r in rounds]
    sums = [r.ours_steps_sum_ms for r in rounds]
    by_tool = {
        tool: statistics.median(r.peer_ms_by_tool.get(tool, 0.0) for r in rounds)
        for tool in ("dig", "curl", "openssl")
    }
    ours_median, peer_median = statistics.median(ours), statistics.median(peer)
    probe_median = statistics.median(probe_ms)
    met = "met" if ours_median <= TARGET_MS and max(ours) <= TARGET_MS else "not met"
    if ours_median <= TARGET_MS < max(ours):
        met = "met by the median, not by every run"
    lookups = 2 * len(plan.hosts)
    width = 48
    lines = [
        f"mailwarden probe {ADDRESS} on the discovery lab: {len(rounds)} rounds "
        f"(after {warmup} warm-up), ours and the peer alternating; "
        f"load average {loads[0]:.2f} before, {loads[1]:.2f} after",
        f"peer: {len(plan.dns)} dig (the DNS steps) + {lookups} dig (A and AAAA of "
        f"{len(plan.hosts)} hosts) + {len(plan.http)} curl (the HTTP steps) + "
        f"{len(plan.servers)} openssl s_client (the mail servers), one after another;",
        "      the same network work as ours, without reading or comparing any answer",
        "",
        f"{'':{width}} {'median':>9}   min–max",
        f"{'ours: mailwarden probe CLI, wall':{width}} {spread(ours)}",
        f"{'ours: the probe in-process (its JSON ms)':{width}} {spread(probe_ms)}",
        f"{'ours: start-up and output (wall − in-process)':{width}} {spread(startup)}",
        f"{'ours: its steps added up (if run in sequence)':{width}} {spread(sums)}",
        f"{'peer: curl/dig/openssl in sequence, wall':{width}} {spread(peer)}",
        f"{'  of which dig / curl / openssl (medians)':{width}} "
        f"{by_tool['dig']:6.0f} / {by_tool['curl']:.0f} / {by_tool['openssl']:.0f} ms",
        "",
        f"{'ratio peer / ours, CLI wall':{width}} {peer_median / ours_median:6.2f}×",
        f"{'ratio peer / ours, in-process probe':{width}} {peer_median / probe_median:6.2f}×",
        f"{'target: a probe ≤ 2 s (CLI wall, median / max)':{width}} "
        f"{ours_median:6.0f} ms / {max(ours):.0f} ms: {met}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.probe",
        description="mailwarden probe of one address on the discovery lab vs the same checks "
        "made with curl, dig and openssl one after another",
    )
    parser.add_argument("--runs", type=int, default=15, help="measured rounds (default 15)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="rounds run first and not counted (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="longest wait for one step, ours (--timeout) and each peer command (default 5)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw numbers here")
    parser.add_argument(
        "--show-commands", action="store_true", help="print our command and the peer's commands"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or not 0 < args.timeout <= 60:
        parser.error("give --runs ≥ 1, --warmup ≥ 0 and --timeout between 0 and 60 s")
    check_tools()
    load_before = load_average()
    rounds: list[Round] = []
    with (
        tempfile.TemporaryDirectory(prefix="mailwarden-bench-probe-") as tmp,
        lab_probe(Path(tmp), args.timeout) as (ours_argv, lab),
    ):
        ours_timeout = args.timeout * 6
        _wall, first = run_ours(ours_argv, ours_timeout)
        plan = plan_from_report(first)
        peer = Peer(plan, lab)
        try:
            shown = peer.run()
            if args.show_commands:
                print("ours:", shlex.join(ours_argv))
                print("peer:", *shown.commands, sep="\n  ")
                print()
            for number in range(args.warmup + args.runs):
                if number % 2 == 0:
                    wall, report = run_ours(ours_argv, ours_timeout)
                    peer_run = peer.run()
                else:
                    peer_run = peer.run()
                    wall, report = run_ours(ours_argv, ours_timeout)
                if number >= args.warmup:
                    rounds.append(
                        Round(
                            wall,
                            float(report["ms"]),
                            steps_sum_ms(report),
                            peer_run.wall_ms,
                            dict(peer_run.ms_by_tool),
                        )
                    )
        except PeerError as exc:
            raise SystemExit(f"peer: {exc}") from None
    load_after = load_average()
    print(summary(plan, rounds, (load_before, load_after), args.warmup))
    if args.json:
        raw = {
            "address": ADDRESS,
            "load_average": [load_before, load_after],
            "ours_command": ours_argv,
            "peer_commands": shown.commands,
            "plan": asdict(plan),
            "rounds": [asdict(r) for r in rounds],
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
