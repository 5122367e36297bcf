"""Site-wide check ``antivirus``: is the virus scanner the MTA relies on alive, current and
actually detecting?

A scanner fails quietly: clamd stops (mail is deferred, or with a milter's "accept on error"
passes unscanned), its signatures stop updating, or, as in the SAVI story in the team's
seeds, an engine update moves its data files and the scanner runs on without them. So the
check asks clamd what an MTA would (``PING``, ``VERSION``, an EICAR stream and a clean one,
each timed) and, for engines without a protocol to ask, looks at their data directories: there,
not empty, recently written.

No ``[audit.antivirus]`` section: the check reports nothing. Many sites scan elsewhere (an
appliance, the upstream provider), and a line on every audit about a scanner the site does not
run would be noise; a section that names neither clamd nor a data directory is one
``AV-NOTHING-CONFIGURED`` note, since that is a slip in the site file.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.clamd import (
    CLEAN_STREAM,
    ClamdFailure,
    ClamdVersion,
    Exchange,
    eicar,
    exchange,
    instream,
    parse_address,
    parse_scan,
    parse_version,
    quoted,
)
from mailwarden.findings import Finding, Severity
from mailwarden.site.model import AntivirusDataDir, AntivirusSettings

NAME = "antivirus"
AFTER_SCAN = False

SLOW_SECONDS = 2.0
"""A healthy clamd answers each of these tiny exchanges in milliseconds. One that takes
seconds has every scanning thread busy (mail queues behind it), is swapping (the official
databases need over 1 GiB) or sits behind a slow link; real mail, thousands of times larger,
then nears the MTA's milter or content-filter timeouts. Half the check's ``timeout`` when that
is shorter, so "slow" always comes before "no answer"."""

MAX_FILES = 10_000
"""A data directory is walked up to this many entries (SAVI has a few hundred files)."""

CODES: dict[str, str] = {
    "AV-CLAMD-DOWN": (
        "Nothing answers on the configured clamd socket: the unix socket does not exist or the "
        "TCP connection is refused. Mail is then not scanned: a milter or amavisd defers it "
        "(tempfail, the default) so the queue grows and mail is late, or, set to accept on "
        "error, lets it through unscanned. Start clamd (systemctl start clamav-daemon), look "
        "at its log for why it stopped (often memory while loading the signatures), and make "
        "sure `clamd` in the site file names the LocalSocket or TCPSocket of clamd.conf."
    ),
    "AV-CLAMD-UNREACHABLE": (
        "The audit could not reach clamd, for a reason that may be its own: permission denied "
        "on the unix socket (the audit's user is not in clamd's group), the host name does not "
        "resolve, or the TCP connection timed out (a packet filter between the audit host and "
        "clamd). The scanner may be fine for the MTA; the audit cannot tell (unknown). Run the "
        "audit as a user allowed to use the socket (the clamav group), or from the MTA host."
    ),
    "AV-CLAMD-TIMEOUT": (
        "clamd accepted the connection but did not answer within the check's timeout. The MTA "
        "waits the same way: mail is deferred or passes unscanned when its client gives up. "
        "clamd hangs, has all MaxThreads busy with a long queue, or is reloading its "
        "databases without ConcurrentDatabaseReload. Look at clamd's log and load, raise "
        "MaxThreads or the memory, and restart clamd if it hangs."
    ),
    "AV-CLAMD-PROTOCOL": (
        "What answers on the clamd socket does not speak clamd's protocol as expected: no PONG "
        "to PING, a reply that is not a version or a scan result, too long, or a connection "
        "closed without an answer. The MTA's client fails the same way. Check that the socket "
        "belongs to clamd (not another service on that port) and that clamd is not crashing "
        "on requests (its log, `clamdscan --ping 1`)."
    ),
    "AV-CLAMD-SLOW": (
        "clamd answered, but one exchange (connect to reply, a 68-byte test stream) took more "
        "than 2 seconds (or half the check's timeout), where a healthy clamd takes "
        "milliseconds. Real mail is much larger, so it nears the MTA's milter or content filter "
        "timeouts. Usually every scanning thread is busy, or the host swaps (the official "
        "signatures need over 1 GiB of memory, twice that while reloading). Add memory or "
        "MaxThreads, or spread the load."
    ),
    "AV-SIGNATURES-OLD": (
        "clamd's signatures (the daily database VERSION reports) are older than warn_hours "
        "(default 24 h). New malware campaigns are added to daily several times a day, so a "
        "scanner a day behind lets the current wave through. Check that freshclam runs (its "
        "log, `systemctl status clamav-freshclam`), can reach the mirrors, and that clamd "
        "reloads (SelfCheck, or freshclam's NotifyClamd)."
    ),
    "AV-SIGNATURES-STALE": (
        "clamd's signatures are older than critical_hours (default 72 h): updating has stopped. "
        "The scanner misses everything new. Fix freshclam (its log says why: network, a "
        "mirror ban for too frequent updates, disk full, an outdated engine the mirrors no "
        "longer serve) and check that clamd loads the new databases."
    ),
    "AV-SIGNATURES-UNDATED": (
        "clamd's VERSION names no signature version or date: it loaded no official daily "
        "database. Either the site uses only its own signatures, or daily.cvd/daily.cld was "
        "lost (a failed update, a wrong DatabaseDirectory) and clamd scans with what is left. "
        "The audit cannot judge the signatures' age (unknown; a note when the site watches "
        "data directories instead). Run freshclam, or add the DatabaseDirectory as an "
        "[[audit.antivirus.data_dirs]] entry so its files' age is checked."
    ),
    "AV-EICAR-MISSED": (
        "clamd scanned the EICAR test file (the harmless string every scanner detects by "
        "agreement) and reported it clean: the scanner lets viruses through. Usually clamd "
        "runs without signatures (empty or wrong DatabaseDirectory, the official databases "
        "missing) or with detection disabled. Check `clamdscan` on an EICAR file, the "
        "DatabaseDirectory and clamd's log for the number of signatures loaded."
    ),
    "AV-CLEAN-FLAGGED": (
        "clamd reported the check's harmless test text as infected. A scanner that flags "
        "ordinary text rejects or quarantines good mail. Usually a broken local signature "
        "(a .ndb/.hdb in DatabaseDirectory that matches too much) or an aggressive heuristic "
        "option; the reply names the signature: remove or fix it."
    ),
    "AV-SCAN-ERROR": (
        "clamd answered a scan with an error instead of a verdict (a size limit, memory, a "
        "temporary file it cannot write). Real mail gets the same error: deferred or passed "
        "unscanned. The message quotes clamd's reason; check StreamMaxLength, TemporaryDirectory "
        "(space, permissions) and the memory of the clamd host."
    ),
    "AV-DATA-MISSING": (
        "A configured data directory of a virus engine does not exist (or is not a directory). "
        "The engine scans without its data or not at all; the SAVI story in the seeds is an "
        "update that moved the .vdl/.ide files while the mail filter kept loading the old "
        "path. Point the engine (or the site file) at the current directory, or link the old "
        "path to the new one."
    ),
    "AV-DATA-UNREADABLE": (
        "A configured data directory cannot be read by the audit (permission denied). If the "
        "engine's user cannot read it either, it scans without data. Fix the permissions "
        "for the engine's user, and run the audit as a user that may read the directory."
    ),
    "AV-DATA-EMPTY": (
        "A configured data directory holds no data files (none, or only empty ones): an "
        "update failed half-way or the files went elsewhere, and the engine has nothing to "
        "detect with. Run the engine's update tool and check where it writes."
    ),
    "AV-DATA-OLD": (
        "The newest file in a configured data directory is older than its max_age_hours: the "
        "engine's updates have stopped for a while. Check the update job (its log, the "
        "network access to the vendor, the licence)."
    ),
    "AV-DATA-STALE": (
        "The newest file in a configured data directory is older than twice its max_age_hours: "
        "the engine has not been updated for long and misses all recent malware. Fix the "
        "update job now (its log, the network access to the vendor, the licence)."
    ),
    "AV-NOTHING-CONFIGURED": (
        "The site file has an [audit.antivirus] section that names neither clamd nor a data "
        'directory, so there is nothing to check. Set clamd = "unix:/run/clamav/clamd.ctl" '
        "(or tcp:HOST:PORT), add [[audit.antivirus.data_dirs]] entries, or remove the section."
    ),
}


async def run(context: SiteContext) -> list[CheckResult]:
    settings = context.site.audit.antivirus
    if settings is None:
        return []
    results: list[CheckResult] = []
    if settings.clamd is not None:
        results.append(await check_clamd(context, settings, settings.clamd))
    for entry in settings.data_dirs:
        state = await asyncio.to_thread(look_at, entry.path)
        findings, detail = judge_data_dir(entry, state, context.now)
        results.append(site_result(NAME, entry.name, findings, detail))
    if not results:
        note = Finding(
            Severity.INFO,
            "AV-NOTHING-CONFIGURED",
            NAME,
            "[audit.antivirus] names neither clamd nor a data directory",
            'set clamd = "unix:/run/clamav/clamd.ctl" or add [[audit.antivirus.data_dirs]]',
        )
        results.append(site_result(NAME, NAME, [note]))
    return results


# --- clamd -----------------------------------------------------------------------------------


_FAILURE_CODES = {
    "down": ("AV-CLAMD-DOWN", Severity.ERROR),
    "unreachable": ("AV-CLAMD-UNREACHABLE", Severity.UNKNOWN),
    "timeout": ("AV-CLAMD-TIMEOUT", Severity.ERROR),
    "protocol": ("AV-CLAMD-PROTOCOL", Severity.ERROR),
}
_FAILURE_FIXES = {
    "down": "start clamd and check that the site file names its LocalSocket or TCPSocket",
    "unreachable": "run the audit as a user allowed to use clamd's socket, or from the MTA host",
    "timeout": "look at clamd's log and load; restart it if it hangs",
    "protocol": "check that the socket belongs to a working clamd",
}


async def check_clamd(context: SiteContext, settings: AntivirusSettings, clamd: str) -> CheckResult:
    """PING, VERSION, an EICAR stream and a clean one, each on its own connection; a failure to
    connect or to get an answer ends the check there (the next command would only wait too)."""
    address = parse_address(clamd)
    subject = "clamd"
    findings: list[Finding] = []
    timings: list[tuple[str, float]] = []
    steps = (
        ("PING", b"zPING\0"),
        ("VERSION", b"zVERSION\0"),
        ("EICAR", instream(eicar())),
        ("clean", instream(CLEAN_STREAM)),
    )
    replies: dict[str, str] = {}
    for label, request in steps:
        try:
            answer: Exchange = await exchange(address, context.network, request, settings.timeout)
        except ClamdFailure as exc:
            code, severity = _FAILURE_CODES[exc.kind]
            message = f"{label}: {exc}"
            findings.append(Finding(severity, code, subject, message, _FAILURE_FIXES[exc.kind]))
            break
        timings.append((label, answer.seconds))
        replies[label] = answer.reply
        if label == "PING" and answer.reply != "PONG":
            findings.append(_protocol(subject, f"PING answered {quoted(answer.reply)}, not PONG"))
            break
    details: list[str] = []
    if "VERSION" in replies:
        version = parse_version(replies["VERSION"])
        if version is None:
            reply = quoted(replies["VERSION"])
            findings.append(_protocol(subject, f"VERSION answered {reply}"))
        else:
            found, text = judge_version(version, settings, context.now, subject)
            findings += found
            details.append(text)
    if "EICAR" in replies:
        found, text = judge_eicar(replies["EICAR"], subject)
        findings += found
        details.append(text)
    if "clean" in replies:
        found, text = judge_clean(replies["clean"], subject)
        findings += found
        details.append(text)
    findings += judge_latency(timings, slow_limit(settings.timeout), subject)
    details.append(", ".join(f"{label} {_ms(seconds)}" for label, seconds in timings))
    return site_result(NAME, subject, findings, f"{address}: " + "; ".join(d for d in details if d))


def slow_limit(timeout: float) -> float:
    return min(SLOW_SECONDS, timeout / 2)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _protocol(subject: str, message: str) -> Finding:
    return Finding(
        Severity.ERROR, "AV-CLAMD-PROTOCOL", subject, message, _FAILURE_FIXES["protocol"]
    )


def judge_version(
    version: ClamdVersion, settings: AntivirusSettings, now: datetime, subject: str
) -> tuple[list[Finding], str]:
    """The signatures' age against ``warn_hours`` and ``critical_hours``.

    clamd prints the date in its host's local time; it is read in the audit host's local time
    (the same host for a unix socket, usually the same zone over TCP).
    """
    if version.signatures is None or version.published is None:
        watched = bool(settings.data_dirs)
        severity = Severity.INFO if watched else Severity.UNKNOWN
        message = (
            f"clamd ({version.engine}) names no signature version or date: no official daily "
            "database is loaded, so the signatures' age is not known"
        )
        fix = (
            "run freshclam, or watch DatabaseDirectory with an [[audit.antivirus.data_dirs]] entry"
        )
        return [Finding(severity, "AV-SIGNATURES-UNDATED", subject, message, fix)], (
            f"ClamAV {version.engine}, signatures undated"
        )
    published = version.published.astimezone(UTC)
    hours = (now - published) / timedelta(hours=1)
    when = published.strftime("%Y-%m-%d %H:%M UTC")
    age = f"{max(hours, 0):.0f} h old"
    text = f"ClamAV {version.engine}, signatures {version.signatures} of {when} ({age})"
    fix = "check that freshclam runs and reaches the mirrors, and that clamd reloads"
    if hours > settings.critical_hours:
        message = (
            f"signatures {version.signatures} are {hours:.0f} h old "
            f"(critical above {settings.critical_hours:g} h)"
        )
        return [Finding(Severity.ERROR, "AV-SIGNATURES-STALE", subject, message, fix)], text
    if hours > settings.warn_hours:
        message = (
            f"signatures {version.signatures} are {hours:.0f} h old "
            f"(warning above {settings.warn_hours:g} h)"
        )
        return [Finding(Severity.WARNING, "AV-SIGNATURES-OLD", subject, message, fix)], text
    return [], text


def judge_eicar(reply: str, subject: str) -> tuple[list[Finding], str]:
    scan = parse_scan(reply)
    if scan is None:
        return [_protocol(subject, f"the EICAR scan answered {quoted(reply)}")], ""
    if scan.verdict == "found":
        return [], f"EICAR detected ({scan.name})"
    if scan.verdict == "error":
        return [_scan_error(subject, "the EICAR scan", scan.name)], ""
    message = "clamd reported the EICAR test file clean: the scanner lets viruses through"
    fix = "check DatabaseDirectory and the number of signatures clamd loaded (its log)"
    return [Finding(Severity.ERROR, "AV-EICAR-MISSED", subject, message, fix)], ""


def judge_clean(reply: str, subject: str) -> tuple[list[Finding], str]:
    scan = parse_scan(reply)
    if scan is None:
        return [_protocol(subject, f"the clean scan answered {quoted(reply)}")], ""
    if scan.verdict == "clean":
        return [], "clean stream passed"
    if scan.verdict == "error":
        return [_scan_error(subject, "the clean scan", scan.name)], ""
    message = f"clamd flagged a harmless test text as {quoted(scan.name)}: good mail is rejected"
    fix = "remove or fix the signature it names (a local .ndb/.hdb that matches too much)"
    return [Finding(Severity.ERROR, "AV-CLEAN-FLAGGED", subject, message, fix)], ""


def _scan_error(subject: str, what: str, reason: str) -> Finding:
    return Finding(
        Severity.ERROR,
        "AV-SCAN-ERROR",
        subject,
        f"{what} failed: clamd answered {quoted(reason)}",
        "check StreamMaxLength, TemporaryDirectory and clamd's memory",
    )


def judge_latency(timings: list[tuple[str, float]], limit: float, subject: str) -> list[Finding]:
    slow = [(label, seconds) for label, seconds in timings if seconds > limit]
    if not slow:
        return []
    listed = ", ".join(f"{label} {_ms(seconds)}" for label, seconds in slow)
    message = f"clamd is slow: {listed} (above {_ms(limit)} for a tiny request)"
    fix = "look at clamd's load and memory (busy threads, swapping); add MaxThreads or memory"
    return [Finding(Severity.WARNING, "AV-CLAMD-SLOW", subject, message, fix)]


# --- data directories ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataDirState:
    """What :func:`look_at` found in a data directory."""

    status: str
    """``ok``, ``missing``, ``not-a-directory`` or ``unreadable``."""
    files: int = 0
    """Regular files that are not empty."""
    empty_files: int = 0
    newest: float | None = None
    """The newest data file's mtime (seconds since the epoch)."""
    newest_name: str = ""
    truncated: bool = False
    """The walk stopped at :data:`MAX_FILES` entries."""


def look_at(path: Path, limit: int = MAX_FILES) -> DataDirState:
    """Walk ``path`` (symbolic links to files and the top directory followed: the SAVI fix is a
    link) and note its data files; blocking, so the check runs it in a thread."""
    try:
        if not path.exists():
            return DataDirState("missing")
        if not path.is_dir():
            return DataDirState("not-a-directory")
        os.listdir(path)
    except PermissionError:
        return DataDirState("unreadable")
    except OSError:
        return DataDirState("missing")
    files = empty = seen = 0
    newest: float | None = None
    newest_name = ""
    for folder, _dirs, names in os.walk(path):
        for name in names:
            seen += 1
            if seen > limit:
                return DataDirState("ok", files, empty, newest, newest_name, truncated=True)
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:  # a dangling link, a file gone meanwhile
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_size == 0:
                empty += 1
                continue
            files += 1
            if newest is None or info.st_mtime > newest:
                newest, newest_name = (
                    info.st_mtime,
                    os.path.relpath(os.path.join(folder, name), path),
                )
    return DataDirState("ok", files, empty, newest, newest_name)


def judge_data_dir(
    entry: AntivirusDataDir, state: DataDirState, now: datetime
) -> tuple[list[Finding], str]:
    """Missing, unreadable or empty: error. The newest file older than ``max_age_hours``: a
    warning (an update or two missed); older than twice that: an error (updates stopped)."""
    subject = entry.name
    where = str(entry.path)
    if state.status in ("missing", "not-a-directory"):
        what = "does not exist" if state.status == "missing" else "is not a directory"
        fix = "point the engine and the site file at its current data directory"
        finding = Finding(Severity.ERROR, "AV-DATA-MISSING", subject, f"{where} {what}", fix)
        return [finding], ""
    if state.status == "unreadable":
        message = f"{where} cannot be read (permission denied)"
        fix = "let the engine's user (and the audit) read it"
        return [Finding(Severity.ERROR, "AV-DATA-UNREADABLE", subject, message, fix)], ""
    if state.files == 0 or state.newest is None:
        extra = f" ({state.empty_files} empty files)" if state.empty_files else ""
        message = f"{where} holds no data files{extra}"
        fix = "run the engine's update and check where it writes its data"
        return [Finding(Severity.ERROR, "AV-DATA-EMPTY", subject, message, fix)], ""
    newest = datetime.fromtimestamp(state.newest, UTC)
    hours = (now - newest) / timedelta(hours=1)
    more = "+" if state.truncated else ""
    detail = (
        f"{where}: {state.files}{more} data files, newest {state.newest_name} "
        f"of {newest:%Y-%m-%d %H:%M} UTC ({max(hours, 0):.0f} h old)"
    )
    limit = entry.max_age_hours
    fix = "check the engine's update job (its log, network access to the vendor, the licence)"
    if hours > 2 * limit:
        message = (
            f"{where}: the newest data file is {hours:.0f} h old (error above {2 * limit:g} h)"
        )
        return [Finding(Severity.ERROR, "AV-DATA-STALE", subject, message, fix)], detail
    if hours > limit:
        message = f"{where}: the newest data file is {hours:.0f} h old (limit {limit:g} h)"
        return [Finding(Severity.WARNING, "AV-DATA-OLD", subject, message, fix)], detail
    return [], detail
