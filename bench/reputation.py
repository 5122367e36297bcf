"""Throughput of ``mailwarden reputation scan`` against ``grep -c status=`` on the same log.

Generates a realistic outbound-relay Postfix log under ``var/bench/reputation/`` (once; reused
while the parameters are unchanged): each message leaves the lines a real relay writes
(smtpd connect/client/disconnect, cleanup, qmgr from/removed, a TLS line, one ``status=`` line
per recipient), deliveries to Gmail, Microsoft, Yahoo, GMX, WEB.DE, T-Online and others from
two outbound transports, about 86 % sent, 10 % ordinary deferrals (timeouts, greylisting, full
mailboxes: no signature), 4 % the providers' reputation answers, over 48 hours. A second file
holds only the delivery (``status=``) lines of the first: the worst case, where every line
goes through the parser.

Then, in the same run and alternating, it times the whole CLI (``python -m mailwarden
reputation scan FILE --format json --until END``: start-up included) and ``grep -c status=
FILE`` and prints the medians, lines per second and the ratio.

Run: ``.venv/bin/python -m bench.reputation`` (about a minute); ``--lines``, ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench" / "reputation"
END = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

PROVIDERS = [  # relay host, ip, domains, weight
    ("gmail-smtp-in.l.google.com", "142.250.102.27", ["gmail.com", "googlemail.com"], 35),
    ("outlook-com.olc.protection.outlook.com", "52.101.68.19", ["outlook.com", "hotmail.com"], 15),
    ("uni-x-de.mail.protection.outlook.com", "52.101.73.4", ["uni-x.de"], 10),
    ("mta7.am0.yahoodns.net", "67.195.204.77", ["yahoo.com", "aol.com"], 5),
    ("mx00.emig.gmx.net", "212.227.15.9", ["gmx.de", "gmx.net"], 8),
    ("mx-ha03.web.de", "212.227.15.17", ["web.de"], 6),
    ("mx00.t-online.de", "194.25.134.8", ["t-online.de"], 5),
    ("mx.example.net", "198.51.100.25", ["example.net", "example.org"], 16),
]
ORDINARY_DEFER = [
    "host {h}[{ip}] said: 450 4.2.0 <{r}>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/{d}.html (in reply to RCPT TO command)",
    "host {h}[{ip}] said: 452 4.2.2 The email account that you tried to reach is over quota. "
    "(in reply to RCPT TO command)",
    "connect to {h}[{ip}]:25: Connection timed out",
    "lost connection with {h}[{ip}] while receiving the initial server greeting",
]
REPUTATION = {
    "gmail-smtp-in.l.google.com": "host {h}[{ip}] said: 421-4.7.28 [192.0.2.10      15] Our "
    "system has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP "
    "address. To protect our 421-4.7.28 users from spam, mail sent from your IP address has been "
    "temporarily 421-4.7.28 rate limited. For more information, go to 421-4.7.28  "
    "https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 4.7.28 review our Bulk "
    "Email Senders Guidelines. a1si123wrb.12 - gsmtp (in reply to end of DATA command)",
    "outlook-com.olc.protection.outlook.com": "host {h}[{ip}] said: 550 5.7.1 Unfortunately, "
    "messages from [192.0.2.10] weren't sent. Please contact your Internet service provider "
    "since part of their network is on our block list (S3140). You can also refer your provider "
    "to http://mail.live.com/mail/troubleshooting.aspx#errors. [AM4PEPF00027A5F.eurprd04.prod."
    "outlook.com] (in reply to MAIL FROM command)",
    "uni-x-de.mail.protection.outlook.com": "host {h}[{ip}] said: 451 4.7.650 The mail server "
    "[192.0.2.11] has been temporarily rate limited due to IP reputation. For e-mail delivery "
    "information, see https://postmaster.live.com (S775) (in reply to MAIL FROM command)",
    "mta7.am0.yahoodns.net": "host {h}[{ip}] said: 421 4.7.0 [TSS04] Messages from 192.0.2.10 "
    "temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see "
    "https://postmaster.yahooinc.com/error-codes (in reply to MAIL FROM command)",
    "mx00.emig.gmx.net": "host {h}[{ip}] refused to talk to me: 554-gmx.net (mxgmx117) Nemesis "
    "ESMTP Service not available 554-No SMTP service 554-IP address is block listed. 554 For "
    "explanation visit https://www.gmx.net/mail/senderguidelines?c=bl",
    "mx-ha03.web.de": "host {h}[{ip}] refused to talk to me: 554-web.de (mxweb111) Nemesis "
    "ESMTP Service not available 554-No SMTP service 554-Reject due to policy restrictions. 554 "
    "For explanation visit https://web.de/email/senderguidelines?ip=192.0.2.10&c=hi",
    "mx00.t-online.de": "host {h}[{ip}] refused to talk to me: 554 IP=192.0.2.10 - A problem "
    "occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de to clarify.) (BL)",
    "mx.example.net": "host {h}[{ip}] said: 554 5.7.1 Service unavailable; Client host "
    "[192.0.2.10] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10 "
    "(in reply to RCPT TO command)",
}
ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


def _stamp(ts: float) -> str:
    t = time.gmtime(ts)
    return f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:>2} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def generate(path: Path, lines: int, seed: int = 7) -> tuple[int, int]:
    """Write about ``lines`` lines; return (lines written, status lines)."""
    rng = random.Random(seed)
    hosts = [p for p in PROVIDERS for _ in range(p[3])]
    span = 2 * 86400.0
    per_message = 9.0
    messages = int(lines / per_message)
    written = status = 0
    with (
        path.open("w", encoding="utf-8") as out,
        path.with_suffix(".status").open("w", encoding="utf-8") as only,
    ):
        for n in range(messages):
            ts = END - span + span * n / messages
            st = _stamp(ts)
            qid = "4Tw" + "".join(rng.choice(ALPHABET) for _ in range(11))
            pid = 2000 + n % 5000
            cip = f"10.{n % 250}.{n % 199}.{n % 97 + 1}"
            tag = "postfix/smtp" if n % 3 else "postfix-ip2/smtp"
            h, ip, domains, _ = rng.choice(hosts)
            block = [
                f"{st} mx-out1 postfix/smtpd[{pid}]: connect from webmail.example.edu[{cip}]",
                f"{st} mx-out1 postfix/smtpd[{pid}]: {qid}: client=webmail.example.edu[{cip}], "
                f"sasl_method=PLAIN, sasl_username=u{n % 20000:05d}",
                f"{st} mx-out1 postfix/cleanup[{pid + 1}]: {qid}: message-id=<{qid}@example.edu>",
                f"{st} mx-out1 postfix/qmgr[1874]: {qid}: from=<u{n % 20000:05d}@example.edu>, "
                f"size={rng.randint(900, 90000)}, nrcpt=1 (queue active)",
                f"{st} mx-out1 postfix/smtpd[{pid}]: disconnect from webmail.example.edu[{cip}] "
                "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
                f"{st} mx-out1 {tag}[{pid + 2}]: Trusted TLS connection established to {h}[{ip}]"
                ":25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
            ]
            rcpt = f"r{rng.randint(1, 99999)}@{rng.choice(domains)}"
            roll = rng.random()
            if roll < 0.86:
                result = (
                    f"dsn=2.0.0, status=sent (250 2.0.0 OK  {int(ts)} "
                    f"{qid.lower()}si{n}.{n % 500} - gsmtp)"
                )
            elif roll < 0.96:
                reason = rng.choice(ORDINARY_DEFER).format(h=h, ip=ip, r=rcpt, d=rcpt[-9:])
                result = f"dsn=4.0.0, status=deferred ({reason})"
            else:
                reason = REPUTATION[h].format(h=h, ip=ip)
                kind = "bounced" if " 5" in reason[:80] or "554" in reason else "deferred"
                result = f"dsn=4.7.0, status={kind} ({reason})"
            line = (
                f"{st} mx-out1 {tag}[{pid + 2}]: {qid}: to=<{rcpt}>, relay={h}[{ip}]:25, "
                f"delay=1.2, delays=0.05/0.01/0.5/0.64, {result}"
            )
            block.append(line)
            block.append(f"{st} mx-out1 postfix/qmgr[1874]: {qid}: removed")
            if n % 2:
                block.append(
                    f"{st} mx-out1 postfix/anvil[1901]: statistics: max connection count 3 for "
                    f"(smtp:{cip}) at {st}"
                )
            out.write("\n".join(block) + "\n")
            only.write(line + "\n")
            written += len(block)
            status += 1
    return written, status


def _time(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1, 2):
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed, done.stdout


def measure(path: Path, total: int, runs: int) -> dict[str, float]:
    ours_cmd = [
        sys.executable,
        "-m",
        "mailwarden",
        "reputation",
        "scan",
        str(path),
        "--format",
        "json",
        "--until",
        "2026-03-14T12:00:00Z",
        "--tz",
        "UTC",
    ]
    grep_cmd = ["grep", "-c", "status=", str(path)]
    ours, grep = [], []
    report: dict[str, object] = {}
    _time(ours_cmd)  # warm-up: page cache, bytecode
    _time(grep_cmd)
    for i in range(runs):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            if which == 0:
                t, out = _time(ours_cmd)
                ours.append(t)
                report = json.loads(out)
            else:
                grep.append(_time(grep_cmd)[0])
    lines = report["lines"]
    assert isinstance(lines, dict)
    assert lines["read"] == total, (lines, total)
    o, g = statistics.median(ours), statistics.median(grep)
    return {
        "lines": total,
        "ours_s": o,
        "grep_s": g,
        "ours_lps": total / o,
        "grep_lps": total / g,
        "ratio": o / g,
        "state": report["state"],  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"maillog-{args.lines}.log"
    meta = log.with_suffix(".json")
    if not meta.exists():
        written, status = generate(log, args.lines)
        meta.write_text(json.dumps({"lines": written, "status": status}))
    info = json.loads(meta.read_text())
    print(f"log: {log} ({info['lines']:,} lines, {info['status']:,} delivery lines)")
    rows = [
        ("realistic relay log", measure(log, info["lines"], args.runs)),
        ("delivery lines only", measure(log.with_suffix(".status"), info["status"], args.runs)),
    ]
    print(f"\nmedian of {args.runs} runs, whole command (start-up included):\n")
    print("| log | lines | ours | ours lines/s | grep -c status= | grep lines/s | ours ÷ grep |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(
            f"| {name} | {r['lines']:,} | {r['ours_s']:.2f} s | {r['ours_lps']:,.0f} | "
            f"{r['grep_s']:.3f} s | {r['grep_lps']:,.0f} | {r['ratio']:.1f}× |"
        )


if __name__ == "__main__":
    main()
