"""The signature data: which relay hosts belong to which provider, which replies mean trouble.

The data lives in a TOML file shipped with the package (``signatures.toml``) so that a mail
team can read, fix and extend it without touching code; ``--signatures FILE`` adds a site's own
file in the same format. Everything is validated on load (a bad regex names its entry), then
compiled once: the hot path asks :meth:`SignatureSet.provider_of` (cached per relay host) and,
only for replies that are not plain successes, :meth:`SignatureSet.match`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from mailwarden.errors import InputError

Kind = Literal["throttle", "block", "blocklist"]
KINDS: tuple[Kind, ...] = ("throttle", "block", "blocklist")
LEVEL: dict[str, int] = {"ok": 0, "throttle": 1, "block": 2, "blocklist": 2}
"""How bad a kind is: the exit status of ``scan`` and the order of alert states."""

ANY = "*"
OTHER = "other"
"""The provider of relays no ``[[provider]]`` entry recognises."""
MAX_FILE = 1 << 20
MAX_CACHE = 50_000
"""Relay host names remembered per run; a log naming more distinct hosts resets the cache."""


class SignatureError(InputError):
    """A signature file is unreadable or invalid. Exit status 3 (monitoring: UNKNOWN), since
    2 already means "blocking seen"."""

    code = "REPUTATION-SIGNATURES"
    exit_status = 3


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    hosts: tuple[re.Pattern[str], ...]
    domains: frozenset[str]


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    provider: str
    kind: Kind
    pattern: re.Pattern[str]
    meaning: str
    advice: str
    link: str
    needles: tuple[str, ...] | None = None
    """Lower-case strings of which a matching reply must contain one (None: no such
    guarantee, the regex always runs); see :func:`needles`."""

    def possible(self, lower_reply: str) -> bool:
        """False when the reply cannot match (one substring test per needle, no regex)."""
        return self.needles is None or any(n in lower_reply for n in self.needles)

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "provider": self.provider,
            "kind": self.kind,
            "pattern": self.pattern.pattern,
            "meaning": self.meaning,
            "advice": self.advice,
            "link": self.link,
        }


@dataclass
class SignatureSet:
    """Providers and signatures, in the order they are tried."""

    providers: tuple[Provider, ...]
    signatures: tuple[Signature, ...]
    _by_provider: dict[str, tuple[Signature, ...]] = field(init=False, repr=False)
    _host_cache: dict[str, str] = field(init=False, repr=False, default_factory=dict)
    _domains: dict[str, str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        ids = [p.id for p in self.providers] + [OTHER]
        self._by_provider = {
            pid: tuple(s for s in self.signatures if s.provider in (pid, ANY)) for pid in ids
        }
        for p in reversed(self.providers):
            for d in p.domains:
                self._domains[d] = p.id

    @property
    def names(self) -> dict[str, str]:
        return {p.id: p.name for p in self.providers} | {OTHER: "other providers"}

    def by_id(self) -> dict[str, Signature]:
        return {s.id: s for s in self.signatures}

    def provider_of(self, relay_host: str, domain: str = "") -> str:
        """The provider id of a relay host name (or, with no host, of the recipient domain)."""
        if relay_host:
            cached = self._host_cache.get(relay_host)
            if cached is not None:
                return cached
            found = OTHER
            name = relay_host.lower()
            for p in self.providers:
                if any(h.search(name) for h in p.hosts):
                    found = p.id
                    break
            if len(self._host_cache) >= MAX_CACHE:
                self._host_cache.clear()
            self._host_cache[relay_host] = found
            return found
        return self._domains.get(domain.lower(), OTHER) if domain else OTHER

    def match(self, provider: str, reply: str) -> Signature | None:
        """The first signature of ``provider`` (or of any provider) matching ``reply``."""
        if not reply:
            return None
        # Python's regex engine has no literal prefilter for patterns like these: a search
        # over a 300-character reply costs 2-5 µs per pattern. The needles rule out almost
        # every signature with plain substring tests first.
        lower = reply.lower()
        for sig in self._by_provider.get(provider, self._by_provider[OTHER]):
            if sig.needles is not None:  # inline of sig.possible(): no call, no generator
                for needle in sig.needles:
                    if needle in lower:
                        break
                else:
                    continue
            if sig.pattern.search(reply):
                return sig
        return None


_META = set("\\.^$*+?{}[]|()")
_ESCAPED_LITERAL = set(".^$*+?{}[]|()\\/-#&~ :;,'\"=<>@!%")
MIN_NEEDLE = 3


def _split_top(pattern: str) -> list[str] | None:
    """The pattern's top-level alternatives, or None if its brackets do not balance."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    if depth or in_class:
        return None
    parts.append(pattern[start:])
    return parts


def _runs(branch: str) -> list[str]:
    """Runs of characters the branch must contain literally (groups, classes, anchors and
    anything quantified break a run)."""
    runs, cur, i = [], "", 0
    while i < len(branch):
        ch = branch[i]
        width = 2 if ch == "\\" else 1
        nxt = branch[i + width : i + width + 1]
        literal = ch not in _META or (ch == "\\" and branch[i + 1 : i + 2] in _ESCAPED_LITERAL)
        if literal:
            char = branch[i + 1] if ch == "\\" else ch
            if nxt in ("?", "*", "{"):  # may be absent
                runs.append(cur)
                cur = ""
            elif nxt == "+":  # present, but maybe repeated: it ends the run
                runs.append(cur + char)
                cur = ""
                i += 1
            else:
                cur += char
            i += width
            continue
        runs.append(cur)
        cur = ""
        if ch == "(":  # skip the whole group: its content may be optional
            depth, i = 1, i + 1
            while i < len(branch) and depth:
                if branch[i] == "\\":
                    i += 1
                elif branch[i] == "(":
                    depth += 1
                elif branch[i] == ")":
                    depth -= 1
                i += 1
        elif ch == "[":
            j = branch.find("]", i + 2)
            i = j + 1 if j > 0 else len(branch)
        else:
            i += width
    runs.append(cur)
    return [r for r in runs if r]


def needles(pattern: str) -> tuple[str, ...] | None:
    """For each top-level alternative, its longest literal run (lower case); None if some
    alternative has no run of :data:`MIN_NEEDLE` characters (then no prefilter is safe).

    Conservative by construction: a character followed by ``?``, ``*`` or ``{`` is left out,
    as is everything inside a group or a class, so a string the regex matches always contains
    the needle of the alternative that matched (the property test checks this with strings
    Hypothesis builds from each built-in pattern)."""
    if "(?" in pattern and pattern.startswith("(?") and not pattern.startswith("(?:"):
        return None  # inline flags: stay safe
    branches = _split_top(pattern)
    if branches is None:
        return None
    out = []
    for branch in branches:
        runs = _runs(branch)
        best = max(runs, key=len, default="")
        if len(best) < MIN_NEEDLE:
            return None
        out.append(best.lower())
    return tuple(out)


def _text(entry: dict[str, object], key: str, where: str, *, required: bool = True) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise SignatureError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _regex(text: str, where: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise SignatureError(f"{where}: not a valid regular expression: {exc}") from None
    if pattern.groupindex:
        raise SignatureError(f"{where}: named groups are not allowed; write (?:...)")
    return pattern


def _parse(text: str, source: str) -> tuple[list[Provider], list[Signature]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SignatureError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"provider", "signature"}
    if unknown:
        raise SignatureError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}")
    providers: list[Provider] = []
    for i, entry in enumerate(data.get("provider", [])):
        where = f"{source}: provider[{i}]"
        if not isinstance(entry, dict):
            raise SignatureError(f"{where}: expected a table")
        pid = _text(entry, "id", where)
        where = f"{source}: provider {pid!r}"
        hosts = entry.get("hosts", [])
        domains = entry.get("domains", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise SignatureError(f"{where}: 'hosts' must be a list of regular expressions")
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise SignatureError(f"{where}: 'domains' must be a list of domain names")
        providers.append(
            Provider(
                id=pid,
                name=_text(entry, "name", where, required=False) or pid,
                hosts=tuple(_regex(h, f"{where}: host {h!r}") for h in hosts),
                domains=frozenset(d.strip().lower().rstrip(".") for d in domains),
            )
        )
    signatures: list[Signature] = []
    for i, entry in enumerate(data.get("signature", [])):
        where = f"{source}: signature[{i}]"
        if not isinstance(entry, dict):
            raise SignatureError(f"{where}: expected a table")
        sid = _text(entry, "id", where)
        where = f"{source}: signature {sid!r}"
        kind = _text(entry, "kind", where)
        if kind not in KINDS:
            raise SignatureError(f"{where}: kind must be one of {', '.join(KINDS)}")
        signatures.append(
            Signature(
                id=sid,
                provider=_text(entry, "provider", where),
                kind=kind,
                pattern=(pattern := _regex(_text(entry, "pattern", where), f"{where}: pattern")),
                needles=needles(pattern.pattern),
                meaning=_text(entry, "meaning", where),
                advice=_text(entry, "advice", where, required=False),
                link=_text(entry, "link", where, required=False),
            )
        )
    return providers, signatures


def builtin_text() -> str:
    return resources.files("mailwarden.reputation").joinpath("signatures.toml").read_text("utf-8")


def load_signatures(extra: list[Path] | None = None) -> SignatureSet:
    """The built-in signatures, with each file of ``extra`` in front (its ids replace)."""
    providers, signatures = _parse(builtin_text(), "built-in signatures.toml")
    for path in extra or []:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SignatureError(f"{path}: cannot read: {exc.strerror}") from None
        if len(raw) > MAX_FILE:
            raise SignatureError(f"{path}: larger than 1 MiB; is this a signature file?")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{path}: not UTF-8 (byte {exc.start})") from None
        more_p, more_s = _parse(text, str(path))
        new_p = {p.id for p in more_p}
        new_s = {s.id for s in more_s}
        providers = more_p + [p for p in providers if p.id not in new_p]
        signatures = more_s + [s for s in signatures if s.id not in new_s]
    return build_set(providers, signatures)


def build_set(providers: list[Provider], signatures: list[Signature]) -> SignatureSet:
    """Check cross-references and duplicate ids, then compile."""
    pids = [p.id for p in providers]
    for ids, what in ((pids, "provider"), ([s.id for s in signatures], "signature")):
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise SignatureError(f"{what} id {i!r} is defined twice")
            seen.add(i)
    if OTHER in pids or ANY in pids:
        raise SignatureError(f"provider id {OTHER!r} and {ANY!r} are reserved")
    for s in signatures:
        if s.provider != ANY and s.provider not in pids:
            raise SignatureError(
                f"signature {s.id!r}: provider {s.provider!r} is not defined "
                f"(known: {', '.join(pids)}, or '*' for any)"
            )
    return SignatureSet(tuple(providers), tuple(signatures))
