"""MTA-STS (RFC 8461) as text: the ``_mta-sts`` TXT record, the policy file, its ``mx`` patterns.

Pure functions over untrusted text (a DNS record, an HTTP body): they never raise, they say what
is wrong. The check (:mod:`mailwarden.audit.sitewide.mtasts`) decides how bad it is. The
policy's own limits are RFC 8461's: ``max_age`` at most 31557600 seconds (one year), patterns
that are host names with at most a ``*.`` leftmost label. Sizes are bounded here as well
(:data:`MAX_LINES`, :data:`MAX_MX`), on top of the 64 KiB the fetch reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailwarden.audit.sitewide.dnstxt import tag_list

MAX_AGE_LIMIT = 31_557_600
"""RFC 8461 3.2: the largest ``max_age`` (a year of 365.25 days)."""
MAX_AGE_SHORT = 86_400
"""Below a day a cached policy protects little: RFC 8461 suggests weeks or more."""
MAX_POLICY_BYTES = 64 * 1024
"""RFC 8461 3.3: senders may refuse larger policies; 64 KiB is the size it names."""
MAX_LINES = 1000
"""Policy lines read; a real policy has a handful."""
MAX_MX = 100
"""``mx`` patterns kept."""
MODES = ("enforce", "testing", "none")

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_EXT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_EXT_VALUE = re.compile(r"^[\x21-\x3a\x3c\x3e-\x7e]+$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_sts_record(text: str) -> bool:
    """Whether a TXT text is meant as an STSv1 record (RFC 8461 3.1: it begins ``v=STSv1``).

    Compared without regard to case: the resolver hands records back in lower case, and a
    ``v=stsv1`` a sender would not recognise is better reported as malformed than ignored.
    """
    return text.lstrip(" \t").lower().startswith("v=stsv1")


@dataclass(frozen=True, slots=True)
class StsRecord:
    """One ``_mta-sts`` TXT record as read: the policy ``id``, or the problems found."""

    id: str | None
    problems: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


def parse_sts_record(text: str) -> StsRecord:
    """``v=STSv1; id=20240101T000000;`` (RFC 8461 3.1): version first, one ``id`` of 1-32
    letters and digits, other ``key=value`` extension fields allowed."""
    pairs = tag_list(text)
    if pairs is None:
        return StsRecord(None, ("a field is not of the form key=value",))
    problems: list[str] = []
    if not pairs or pairs[0][0].lower() != "v" or pairs[0][1].lower() != "stsv1":
        problems.append("it does not begin with v=STSv1")
    ids = [value for key, value in pairs if key.lower() == "id"]
    record_id: str | None = None
    if not ids:
        problems.append("it has no id= field")
    elif len(ids) > 1:
        problems.append(f"it has {len(ids)} id= fields")
    elif not _ID.match(ids[0]):
        problems.append(f"id={ids[0][:40]!r} is not 1 to 32 letters and digits")
    else:
        record_id = ids[0]
    for key, value in pairs[1:]:
        if key.lower() in ("id", "v"):
            continue
        if not _EXT_KEY.match(key) or not _EXT_VALUE.match(value):
            problems.append(f"the field {key[:40]}={value[:40]} is not a valid extension field")
    return StsRecord(record_id, tuple(problems))


def valid_mx_pattern(pattern: str) -> bool:
    """A host name (letters, digits, hyphens, at least two labels), ``*.`` allowed in front."""
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def mx_matches(pattern: str, host: str) -> bool:
    """Whether an MX host is covered by a policy's ``mx`` pattern (RFC 8461 4.1): names compared
    without case or trailing dot; ``*.example.net`` covers exactly one more label in front
    (``mx1.example.net``, not ``example.net`` nor ``a.b.example.net``)."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A policy file as read. ``errors`` make senders reject the policy (as if there were
    none); ``warnings`` are what they tolerate."""

    version: str | None = None
    mode: str | None = None
    max_age: int | None = None
    mx: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


def parse_policy(body: bytes) -> StsPolicy:
    """Read an MTA-STS policy (RFC 8461 3.2): ``key: value`` lines, CRLF or LF.

    ``version: STSv1``, ``mode`` (enforce, testing, none), ``max_age`` (seconds, at most
    :data:`MAX_AGE_LIMIT`) once each; ``mx`` once per pattern, required unless the mode is
    none. Unknown keys are extensions, ignored as RFC 8461 asks.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if len(body) > MAX_POLICY_BYTES:
        return StsPolicy(errors=(f"it is {len(body)} bytes, over {MAX_POLICY_BYTES}",))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return StsPolicy(errors=("it is not UTF-8 text",))
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        warnings.append(f"it has {len(lines)} lines; only the first {MAX_LINES} were read")
        lines = lines[:MAX_LINES]
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip(" \t")
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(" \t"), value.strip(" \t")
        if not sep or not _EXT_KEY.match(key):
            errors.append(f"line {number} is not 'key: value': {_shown(line)}")
            continue
        if key == "mx":
            if len(mx) >= MAX_MX:
                if len(mx) == MAX_MX:
                    warnings.append(f"more than {MAX_MX} mx lines; the rest were not read")
                    mx.append("")
                continue
            mx.append(value.lower())
        elif key in ("version", "mode", "max_age"):
            if key in fields:
                warnings.append(f"{key} is given more than once (line {number})")
                continue
            fields[key] = value
    mx = [pattern for pattern in mx if pattern]
    version = fields.get("version")
    if version is None:
        errors.append("it has no version line")
    elif version != "STSv1":
        errors.append(f"version is {_shown(version)}, not STSv1")
    mode = fields.get("mode")
    if mode is None:
        errors.append("it has no mode line")
    elif mode not in MODES:
        errors.append(f"mode is {_shown(mode)}, not enforce, testing or none")
    max_age: int | None = None
    age = fields.get("max_age")
    if age is None:
        errors.append("it has no max_age line")
    elif not (age.isascii() and age.isdigit() and len(age) <= 10):
        errors.append(f"max_age {_shown(age)} is not a number of seconds (1 to 10 digits)")
    else:
        max_age = int(age)
        if max_age > MAX_AGE_LIMIT:
            errors.append(f"max_age {max_age} is over the limit of {MAX_AGE_LIMIT} (a year)")
    for pattern in mx:
        if not valid_mx_pattern(pattern.rstrip(".")):
            errors.append(f"mx {_shown(pattern)} is not a host name or *.host name")
    if not mx and mode in ("enforce", "testing"):
        errors.append(f"mode {mode} needs at least one mx line")
    return StsPolicy(
        version, mode, max_age, tuple(mx), tuple(dict.fromkeys(errors)), tuple(warnings)
    )


def _shown(text: str) -> str:
    return repr(text[:60] + ("…" if len(text) > 60 else ""))
