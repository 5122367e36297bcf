"""The abuse detector: per-user behaviour in, a verdict on the ladder out.

Pure and deterministic: every function takes the time as a value (``Observation.now``) and
touches only the :class:`UserState` it is handed, so a simulated week runs in seconds and a test
can step the clock one second at a time. The state stores (memory, SQLite, Redis) keep the same
numbers; the Redis store computes :class:`Counters` in one Lua call and then uses
:func:`assess` from here, so every store judges alike.

How a verdict comes about:

1. **Ceilings** per class of user (recipients a minute / hour / day) give throttle / hold /
   lock outright: a mailbox doing more than a large provider allows is never normal.
2. An **anomaly score** adds up how far the user is from their own habits: external recipients
   and distinct external domains this hour against the busiest recent hour of the user (with
   a floor per class), many messages with one subject fingerprint, a burst of messages in a
   minute, attempts that keep coming after the guard refused, and — only together with
   another signal — a client network the user has never sent from. Weaker parts add to the
   score without opening that gate: distinct recipient addresses this hour, external
   recipients this hour against the user's usual volume *at this hour of the day* (a 24-slot
   profile: a night-time burst from an office-hours user stands out below the busiest-hour
   allowance), and — together with a stronger signal — recipients already accepted this hour
   beyond the allowance.
3. The **ladder** turns the score into throttle (4.7.x, try later), hold + alert (the message
   stays in the hold queue) or lock (the account may not send until an admin unlocks it).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from mailwarden.guard.config import ClassLimits, GuardConfig, Ladder
from mailwarden.guard.window import DAY, HOUR, MINUTE, SPANS, Recent, Ring, Tally

# The state-keeping rules' constants. They are the only copy: the Redis store passes each of
# them to its Lua scripts (ARGV), so the memory, SQLite and Redis stores keep the same state.
NETWORK_MEMORY_DAYS = 90.0
NETWORK_PROBATION = HOUR
"""A network becomes "known" only after an hour without the account being flagged, so an
attacker's first message does not teach the guard the attacker's network."""
MAX_NETWORKS = 64
"""Networks kept per user; see :func:`_see_network` for which one makes room for a new one."""
MAX_FINGERPRINTS = 64
MAX_SUBJECT_TIMES = 512
"""Messages per subject fingerprint counted within a day (the counts stop there)."""
MAX_DISTINCT = 2000
"""Distinct recipients (1 h) and external domains (24 h) remembered per user."""
RCPT_HISTORY = 20
"""Messages seen before the user's usual recipient count is trusted."""
RCPT_ALPHA = 0.05
RCPT_SEEN_CAP = 1_000_000
"""The message count behind the recipient average stops here (it only gates trust)."""
BASELINE_GAP_HOURS = 24 * 365
"""A pause longer than this decays the baseline as much as this (no overflow of ``pow``)."""


class Action(enum.StrEnum):
    """The rungs of the ladder, mildest first; ``reject`` refuses mail of a locked account."""

    ACCEPT = "accept"
    THROTTLE = "throttle"
    HOLD = "hold"
    LOCK = "lock"
    REJECT = "reject"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    Action.ACCEPT: 0,
    Action.THROTTLE: 1,
    Action.HOLD: 2,
    Action.LOCK: 3,
    Action.REJECT: 4,
}


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing a front end saw: a recipient (RCPT) or a whole message (end of data)."""

    user: str
    now: float
    recipients: tuple[str, ...] = ()
    """Recipient addresses to count (lowercase); empty when another stage counts them."""
    message: bool = False
    """True once per message (at the stage that counts messages)."""
    rcpt_count: int = 0
    network: str = ""
    """The client network (see :func:`~mailwarden.guard.signals.network_of`); ``""``: unknown."""
    subject_fp: str = ""


@dataclass(slots=True)
class Counters:
    """The numbers one decision is made from (what the stores return).

    Not frozen: it is built once per decision on the hot path, and a frozen dataclass's
    constructor costs several times more; nothing keeps or changes it after ``assess``."""

    msgs_1m: int = 0
    rcpts_1m: int = 0
    rcpts_1h: int = 0
    rcpts_24h: int = 0
    ext_rcpts_1h: int = 0
    distinct_rcpts_1h: int = 0
    accepted_1h: int = -1
    """Recipients the guard accepted in the last hour (-1: the store does not count them)."""
    domains_1h: int = 0
    domains_24h: int = 0
    domains_1m: int = -1
    """Distinct external domains attempted in the last minute, refused attempts included
    (-1: the store does not count them; the pace parts are then off)."""
    domains_10s: int = -1
    """The same for the last ten seconds: a machine's pace, which no human keeps up."""
    refused_1h: int = 0
    """Recipients refused in the last hour while their sending was anomalous (see
    :func:`refused_by`): the attempts that keep coming after a stop."""
    same_subject_1h: int = 0
    same_subject_24h: int = 0
    new_network: bool = False
    baseline_hour: float = 0.0
    """The user's busiest recent hour (external recipients), decayed; 0: no history."""
    hour_profile: float = -1.0
    """The user's usual external recipients at this hour of the day, decayed; -1: the profile
    is not trusted yet (or the store keeps none)."""
    message_rcpts: int = 0
    """Recipients of the message being judged (0 at RCPT stage)."""
    typical_rcpts: float = 0.0
    """The user's usual recipients per message; 0 until enough messages were seen."""
    flagged: bool = False
    locked: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    score: float = 0.0
    reasons: tuple[str, ...] = ()
    anomalous: bool = False
    """True when the attempt itself was anomalous: it came while the user was sending to new
    external recipients or domains beyond what is usual. Only such refusals count as
    "attempts after a refusal" and keep a stop in force (:func:`refused_by`)."""

    @property
    def text(self) -> str:
        return "; ".join(self.reasons) or "ok"


ACCEPT = Verdict(Action.ACCEPT)


@dataclass(slots=True)
class UserState:
    """Everything the guard remembers about one account (no message content)."""

    msgs: Ring = field(default_factory=lambda: Ring(*SPANS["1m"]))
    """Messages in the last minute (the only message count a rule reads)."""
    rcpts: Tally = field(default_factory=Tally)
    ext_rcpts: Ring = field(default_factory=lambda: Ring(*SPANS["1h"]))
    refused: Ring = field(default_factory=lambda: Ring(*SPANS["1h"]))
    accepted: Ring = field(default_factory=lambda: Ring(*SPANS["1h"]))
    rcpt_addrs: Recent = field(default_factory=lambda: Recent(HOUR, MAX_DISTINCT))
    domains_1h: Recent = field(default_factory=lambda: Recent(HOUR, MAX_DISTINCT))
    domains_24h: Recent = field(default_factory=lambda: Recent(DAY, MAX_DISTINCT))
    subjects: dict[str, list[float]] = field(default_factory=dict)
    """subject fingerprint → times of its messages within the last day (oldest first), least
    recently used fingerprint first."""
    clock: float = 0.0
    """The latest time a decision of this user was made at (see :func:`record`)."""
    networks: dict[str, float] = field(default_factory=dict)
    """network → first seen (kept while seen within NETWORK_MEMORY_DAYS)."""
    network_seen: dict[str, float] = field(default_factory=dict)
    """network → last seen."""
    baseline_hour: float = 0.0
    hour_profile: list[float] = field(default_factory=lambda: [0.0] * 24)
    """External recipients per hour of the day (local time): decayed peak of each slot."""
    profile_since: int = -1
    """Clock hour the profile started learning (-1: not yet)."""
    rcpt_avg: float = 0.0
    """Recipients per message, exponentially averaged (learned while not flagged)."""
    rcpt_seen: int = 0
    hour_index: int = -1
    hour_ext: int = 0
    flagged_until: float = 0.0
    locked: str | None = None


def decay_factor(hours: float, half_life_days: float) -> float:
    return math.pow(0.5, hours / (half_life_days * 24.0))


def _slot(hour_index: int, offset: float) -> int:
    """The hour of the day (0-23, local time) of clock hour ``hour_index``."""
    return int(hour_index + offset) % 24


def _roll_baseline(state: UserState, now: float, half_life_days: float, offset: float) -> None:
    """Fold finished clock hours into the decayed peak and the hour-of-day profile (only
    while the user is not flagged). A slot decays when its hour comes round with mail; slots
    of hours without mail keep their value, which errs on the side of a larger allowance."""
    index = int(now // HOUR)
    if state.profile_since < 0:  # also for a baseline kept from before the profile existed
        state.profile_since = index
    if state.hour_index < 0:
        state.hour_index = index
        return
    if index <= state.hour_index:
        return
    flagged = now < state.flagged_until
    peak = state.baseline_hour * decay_factor(1, half_life_days)
    if not flagged:
        peak = max(peak, float(state.hour_ext))
        if state.hour_ext:
            slot = _slot(state.hour_index, offset)
            profile = state.hour_profile
            profile[slot] = max(profile[slot] * decay_factor(24, half_life_days), state.hour_ext)
    gap = index - state.hour_index - 1
    if gap > 0:
        peak *= decay_factor(min(gap, BASELINE_GAP_HOURS), half_life_days)
    state.baseline_hour = peak
    state.hour_index = index
    state.hour_ext = 0


def is_internal(domain: str, local_domains: frozenset[str]) -> bool:
    if domain in local_domains:
        return True
    return any(domain.endswith("." + d) for d in local_domains)


def record(
    state: UserState,
    obs: Observation,
    local_domains: frozenset[str],
    ladder: Ladder,
    distinct: bool = True,
) -> Counters:
    """Count ``obs`` into ``state`` and return the counters the decision is made from.

    ``distinct=False`` (classes without anomaly scoring, e.g. newsletters) skips the distinct
    recipient and domain sets: only the counts matter for them, and their messages are large.

    A user's clock never runs backwards: an observation older than the user's latest one (two
    MTAs whose clocks differ by a second, sharing Redis) counts as made at that latest time.
    Every window then only ever moves forwards, and the stores' different containers (rings,
    ordered dicts, sorted sets, lists of times) cannot disagree about what is inside it.

    The Redis store does exactly this in ``store/lua/record.lua``; tests/guard/
    test_store_parity.py holds the two to the same verdicts and the same state.
    """
    now = obs.now if obs.now > state.clock else state.clock
    state.clock = now
    _roll_baseline(state, now, ladder.baseline_half_life_days, ladder.profile_utc_offset)
    flagged = now < state.flagged_until
    typical = 0.0
    msgs_1m = state.msgs.add_total(now, 1 if obs.message else 0)
    if obs.message and obs.rcpt_count > 0:
        typical = state.rcpt_avg if state.rcpt_seen >= RCPT_HISTORY else 0.0
        if not flagged:
            if state.rcpt_seen == 0:
                state.rcpt_avg = float(obs.rcpt_count)
            else:
                state.rcpt_avg += RCPT_ALPHA * (obs.rcpt_count - state.rcpt_avg)
            state.rcpt_seen = min(state.rcpt_seen + 1, RCPT_SEEN_CAP)
    rcpts = state.rcpts.add_totals(now, len(obs.recipients))
    if obs.recipients:
        external = 0
        internal_cache: dict[str, bool] = {}
        for rcpt in obs.recipients if distinct else ():
            domain = rcpt.rpartition("@")[2]
            state.rcpt_addrs.add(now, rcpt)
            internal = internal_cache.get(domain)
            if internal is None:
                internal = internal_cache[domain] = is_internal(domain, local_domains)
            if not internal:
                external += 1
                state.domains_1h.add(now, domain)
                state.domains_24h.add(now, domain)
        if external:
            state.ext_rcpts.add(now, external)
            state.hour_ext += external
    same_subject = (0, 0)
    if obs.message and obs.subject_fp and distinct:
        times = state.subjects.pop(obs.subject_fp, None)
        if times is None:
            times = []
            while len(state.subjects) >= MAX_FINGERPRINTS:
                del state.subjects[_stalest_subject(state.subjects)]
        times.append(now)
        state.subjects[obs.subject_fp] = times
        same_subject = _subject_counts(times, now)
    new_network = False
    if obs.network:
        new_network = _see_network(state, obs.network, now, flagged)
    return Counters(
        msgs_1m=msgs_1m,
        rcpts_1m=rcpts[0],
        rcpts_1h=rcpts[1],
        rcpts_24h=rcpts[2],
        ext_rcpts_1h=state.ext_rcpts.total(now),
        distinct_rcpts_1h=state.rcpt_addrs.count(now),
        domains_1h=state.domains_1h.count(now),
        domains_24h=state.domains_24h.count(now),
        refused_1h=state.refused.total(now),
        same_subject_1h=same_subject[0],
        same_subject_24h=same_subject[1],
        new_network=new_network,
        accepted_1h=state.accepted.total(now),
        baseline_hour=state.baseline_hour,
        hour_profile=_profile_now(state, now, ladder),
        message_rcpts=obs.rcpt_count if obs.message else 0,
        typical_rcpts=typical,
        flagged=flagged,
        locked=state.locked,
    )


def _profile_now(state: UserState, now: float, ladder: Ladder) -> float:
    """The profile value for the current hour of the day, or -1 while it is too young."""
    index = int(now // HOUR)
    if state.profile_since < 0 or index - state.profile_since < ladder.profile_days * 24:
        return -1.0
    return state.hour_profile[_slot(index, ladder.profile_utc_offset)]


def _subject_counts(times: list[float], now: float) -> tuple[int, int]:
    """Messages of one fingerprint in the last hour and day, with the same 5-minute and
    1-hour bucket edges as the other windows (and the Redis store); prunes ``times``.

    A list of times instead of rings: most fingerprints are seen once or twice, and rings
    for each would be most of a user's memory.
    """
    day_width, day_n = SPANS["24h"]
    hour_width, hour_n = SPANS["1h"]
    day_low = int(now // day_width) - day_n
    if int(times[0] // day_width) <= day_low:
        times[:] = [t for t in times if int(t // day_width) > day_low]
    if len(times) > MAX_SUBJECT_TIMES:
        del times[:-MAX_SUBJECT_TIMES]
    hour_low = int(now // hour_width) - hour_n
    in_hour = 0
    for t in reversed(times):
        if int(t // hour_width) <= hour_low:
            break
        in_hour += 1
    return in_hour, len(times)


def _stalest_subject(subjects: dict[str, list[float]]) -> str:
    """The fingerprint to forget for a new one: the one used longest ago, the smallest name
    among those used at that same time (the dict is least recently used first, so only its
    head is looked at; the name makes the choice the Redis store's choice too)."""
    items = iter(subjects.items())
    oldest, times = next(items)
    last = times[-1]
    for fp, more in items:
        if more[-1] != last:
            break
        oldest = min(oldest, fp)
    return oldest


def _see_network(state: UserState, network: str, now: float, flagged: bool) -> bool:
    """Remember ``network``; True when the user has known networks and this is not one.

    With :data:`MAX_NETWORKS` kept, a new network takes the place of the least recently seen
    network *still on probation*, and only when none is on probation of the least recently
    seen known network (ties: the smallest name). Neither simpler rule serves detection:

    * dropping the least recently seen network whatever it is (the memory store's old rule)
      lets a script rotating through 64 addresses before its first refusal push out every
      network the user really sends from; with no known network left, "new client network"
      could no longer fire for anything;
    * refusing every new network once 64 are kept (the Redis store's old rule) makes a user
      who has moved, or whose phone has wandered through 64 carrier networks, look "new" for
      90 days wherever they send from, which adds to the score of their ordinary bursts.

    This rule costs the user at most one known network (the stalest) per hour of probation,
    however many addresses an attacker rotates through; a user who moves is learned again.
    """
    horizon = now - NETWORK_MEMORY_DAYS * DAY
    for net in [n for n, t in state.network_seen.items() if t < horizon]:
        state.network_seen.pop(net, None)
        state.networks.pop(net, None)
    settled = now - NETWORK_PROBATION
    known = {n for n, first in state.networks.items() if first <= settled}
    if network not in state.networks and not flagged:
        networks, seen = state.networks, state.network_seen
        while len(networks) >= MAX_NETWORKS:
            stalest = min(networks, key=lambda n: (networks[n] <= settled, seen.get(n, 0.0), n))
            networks.pop(stalest)
            seen.pop(stalest, None)
        networks[network] = now
    if network in state.networks:
        state.network_seen[network] = now
    return bool(known) and network not in known


def flag(state: UserState, now: float, ladder: Ladder, refused: int) -> None:
    """After a throttle or hold: stop learning for a while and forget networks on probation."""
    state.flagged_until = max(state.flagged_until, now + ladder.flag_hours * HOUR)
    if refused:
        state.refused.add(now, refused)
    state.hour_ext = 0
    for net in [n for n, first in state.networks.items() if first > now - NETWORK_PROBATION]:
        state.networks.pop(net, None)
        state.network_seen.pop(net, None)


def novel_domains(state: UserState, now: float, window: float) -> int:
    """Distinct external domains attempted in the last ``window`` seconds (read from the 1 h
    domain set, which keeps each domain's last sighting; the Redis store's 24 h domain zset
    answers the same with ``ZCOUNT key (now-window +inf``)."""
    return state.domains_1h.count_since(now - window)


def forgive(state: UserState) -> None:
    """After an admin's unlock: forget the activity that led to it, keep what was learned."""
    fresh = UserState()
    for name in (
        "msgs",
        "rcpts",
        "ext_rcpts",
        "refused",
        "accepted",
        "rcpt_addrs",
        "domains_1h",
        "domains_24h",
        "subjects",
    ):
        setattr(state, name, getattr(fresh, name))
    state.hour_ext = 0
    state.flagged_until = 0.0
    state.locked = None


def refused_by(verdict: Verdict, obs: Observation) -> int:
    """Recipients a verdict turned away that count as attempts after a refusal: only those of
    an anomalous attempt (a throttle for a mere ceiling is no anomaly, and a busy honest user
    must not pile up refusals). Held mail is kept, not refused: it does not count, so a hold
    climbs to a lock only on further attempts, as before."""
    if verdict.anomalous and verdict.action in (Action.THROTTLE, Action.LOCK):
        return max(1, len(obs.recipients) or obs.rcpt_count)
    return 0


NOVEL_SHARE = 0.9
"""Share of the last minute's recipients that must sit at distinct external domains for the
minute's pace to count as novel: a spam run writes each message to yet another domain, while
a mail merge to partner institutions and a burst to colleagues repeat their domains."""
MINUTE_DOMAINS_FREE = 12
"""New external domains a minute that never count as a novel pace: a person writing one
recipient at a time (a mail merge at one message every 1.5 s) stays below it while its
domains repeat, a script writing each message to yet another domain does not."""
PACE_WINDOW = 10.0
PACE_DOMAINS_FREE = 7
"""New external domains in ten seconds that never count: a person at one message every
1.5 s reaches 7; a webmail script at five a second passes it after two seconds."""
PACE_MESSAGES = 5
"""Messages a minute before a pace counts (one message to twenty universities is an
invitation, not a run)."""
STOP_REASON = "sending as when it was stopped"


def novel(c: Counters) -> bool:
    """True when the last minute's recipients are mostly at distinct external domains."""
    return c.domains_1m > 0 and c.domains_1m >= NOVEL_SHARE * c.rcpts_1m


def assess(c: Counters, limits: ClassLimits, ladder: Ladder) -> Verdict:
    """The ladder's verdict for counters ``c`` (pure; the heart of the guard).

    Three rules keep honest busy senders out of the hold queue and a stopped attack stopped:

    * hold and lock need **evidence**: external recipients or domains beyond the user's
      allowance, one subject over and over, or a message far larger than the user's habit
      (or a hard ceiling). Pace alone — messages or new domains a minute — and what is
      added on top (attempts after a refusal, a new network, the weak parts) never climb
      past throttle without it;
    * pace is counted in **new external domains**, not messages: ten seconds at a machine's
      pace, or a minute whose recipients sit mostly at distinct external domains
      (:func:`novel`), so a burst to colleagues or a mail merge to partner institutions is
      no anomaly;
    * **a stop holds**: after an anomalous refusal (``refused_1h``), every further attempt
      that is still anomalous or novel is refused, until the windows that caused the stop
      have cleared — the pace of attempts is counted with the refused ones, so an attack
      that keeps going keeps its own evidence alive, and nothing of it gets out between
      refusals.
    """
    if c.locked is not None:
        return Verdict(Action.REJECT, 0.0, (f"account locked: {c.locked}",))
    reasons: list[str] = []
    action = Action.ACCEPT
    # 1. hard ceilings
    if c.rcpts_24h > limits.rcpts_per_day:
        action = Action.LOCK if ladder.lock_mode == "auto" else Action.HOLD
        reasons.append(f"{c.rcpts_24h} recipients in 24 h > {limits.rcpts_per_day}")
    elif c.rcpts_1h > limits.rcpts_per_hour:
        action = Action.HOLD
        reasons.append(f"{c.rcpts_1h} recipients in 1 h > {limits.rcpts_per_hour}")
    elif c.rcpts_1m > limits.rcpts_per_minute:
        action = Action.THROTTLE
        reasons.append(f"{c.rcpts_1m} recipients in 1 min > {limits.rcpts_per_minute}")
    # 2. anomaly score against the user's own habits
    score, evidence, anomalous = 0.0, 0.0, False
    if limits.anomaly:
        score, evidence, anomalous = _score(c, limits, ladder, reasons)
    # 3. the ladder
    by_score = Action.ACCEPT
    if score >= ladder.lock and evidence > 0:
        by_score = Action.LOCK if ladder.lock_mode == "auto" else Action.HOLD
    elif score >= ladder.hold and evidence > 0:
        by_score = Action.HOLD
    elif score >= ladder.throttle:
        by_score = Action.THROTTLE
    if by_score.rank > action.rank:
        action = by_score
    # 4. a stop holds while the attempts keep the shape that caused it
    if limits.anomaly and c.refused_1h > 0 and action is Action.ACCEPT and (anomalous or novel(c)):
        # refused, but not counted as a new anomalous attempt unless it is one by itself:
        # the stop lasts an hour from the last anomalous attempt, it does not renew itself
        action = Action.THROTTLE
        reasons.append(STOP_REASON)
    if action is Action.ACCEPT:
        return Verdict(Action.ACCEPT, score, ())
    return Verdict(action, round(score, 2), tuple(reasons), anomalous)


def _score(
    c: Counters, limits: ClassLimits, ladder: Ladder, reasons: list[str]
) -> tuple[float, float, bool]:
    """(score, evidence, anomalous): the whole score, its evidence part (what may hold and
    lock), and whether the attempt is anomalous: new external recipients or domains beyond
    the allowance, a novel pace, or other evidence (one subject over and over, one large
    message) while the minute's recipients are mostly at distinct external domains. A
    150-recipient announcement to colleagues is refused once, not for an hour."""
    evidence = 0.0
    allowance = max(float(limits.hourly_floor), ladder.baseline_factor * c.baseline_hour)
    if c.ext_rcpts_1h > allowance:
        evidence += 2.0 * (c.ext_rcpts_1h / allowance - 1.0)
        reasons.append(f"{c.ext_rcpts_1h} external recipients in 1 h (usual ≤ {allowance:.0f})")
    domain_allowance = max(float(limits.domains_floor), ladder.baseline_factor * c.baseline_hour)
    if c.domains_1h > domain_allowance:
        evidence += 2.0 * (c.domains_1h / domain_allowance - 1.0)
        reasons.append(f"{c.domains_1h} external domains in 1 h (usual ≤ {domain_allowance:.0f})")
    day_allowance = max(float(limits.domains_day_floor), 2 * domain_allowance)
    if c.domains_24h > day_allowance:
        evidence += 2.0 * (c.domains_24h / day_allowance - 1.0)
        reasons.append(f"{c.domains_24h} external domains in 24 h (usual ≤ {day_allowance:.0f})")
    new_recipients = evidence  # the part that says "new external recipients or domains"
    # one subject over and over: the larger of the hour's and the day's part (a slow run
    # that also sends a few in one hour must not fall back below what its day says)
    hour_part = 0.5 * (c.same_subject_1h - ladder.same_subject_free)
    day_part = 0.15 * (c.same_subject_24h - ladder.same_subject_day_free)
    if hour_part > 0 and hour_part >= day_part:
        evidence += hour_part
        reasons.append(f"{c.same_subject_1h} messages with one subject in 1 h")
    elif day_part > 0:
        evidence += day_part
        reasons.append(f"{c.same_subject_24h} messages with one subject in 24 h")
    if c.typical_rcpts > 0 and c.message_rcpts > max(
        ladder.message_rcpts_free, ladder.baseline_factor * 3 * c.typical_rcpts
    ):
        evidence += 0.5
        reasons.append(f"{c.message_rcpts} recipients in one message (usual {c.typical_rcpts:.1f})")
    # pace: only when novel, and never more than a throttle's worth on its own
    pace = 0.0
    if c.msgs_1m >= PACE_MESSAGES and c.domains_10s > PACE_DOMAINS_FREE:
        pace += float(c.domains_10s - PACE_DOMAINS_FREE)
        reasons.append(f"{c.domains_10s} new external domains in 10 s")
    if c.msgs_1m >= PACE_MESSAGES and novel(c) and c.domains_1m > MINUTE_DOMAINS_FREE:
        pace += float(c.domains_1m - MINUTE_DOMAINS_FREE)
        reasons.append(f"{c.domains_1m} new external domains in 1 min")
    pace = min(pace, ladder.throttle)
    score = evidence + pace
    anomalous = new_recipients > 0 or pace > 0 or (evidence > 0 and novel(c))
    if c.refused_1h > 0 and evidence > 0:
        score += min(4.0, 0.25 * c.refused_1h)
        reasons.append(f"{c.refused_1h} anomalous attempts refused in 1 h")
    if c.new_network and score > 0:
        score += 1.0
        reasons.append("new client network")
    # weaker signals: they add to the score but do not open the gates above on their own
    strong = score
    distinct_allowance = max(float(limits.distinct_floor), ladder.baseline_factor * c.baseline_hour)
    if ladder.distinct_weight and c.distinct_rcpts_1h > distinct_allowance:
        score += ladder.distinct_weight * (c.distinct_rcpts_1h / distinct_allowance - 1.0)
        reasons.append(
            f"{c.distinct_rcpts_1h} distinct recipients in 1 h (usual ≤ {distinct_allowance:.0f})"
        )
    if ladder.profile_weight and c.hour_profile >= 0:
        hour_allowance = max(float(limits.night_floor), ladder.baseline_factor * c.hour_profile)
        if c.ext_rcpts_1h > hour_allowance:
            score += min(ladder.profile_weight, c.ext_rcpts_1h / hour_allowance - 1.0)
            reasons.append(
                f"{c.ext_rcpts_1h} external recipients in 1 h at this hour of the day "
                f"(usual ≤ {hour_allowance:.0f})"
            )
    if ladder.accepted_weight and strong > 0 and c.accepted_1h > allowance:
        score += min(ladder.accepted_weight, c.accepted_1h / allowance - 1.0)
        reasons.append(f"{c.accepted_1h} recipients accepted in 1 h (usual ≤ {allowance:.0f})")
    return score, evidence, anomalous


@dataclass(slots=True)
class Detector:
    """The detector bound to one configuration: ``observe`` = record + assess."""

    config: GuardConfig
    local_domains: frozenset[str]
    _members: dict[str, ClassLimits] = field(init=False, repr=False)
    _default: ClassLimits = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # the configuration is immutable: resolve classes once, not per decision
        self._members = {
            user: self.config.classes[name]
            for name, users in self.config.members.items()
            for user in users
        }
        self._default = self.config.classes["default"]

    def limits_of(self, user: str) -> ClassLimits:
        """The class limits of ``user`` (as :meth:`GuardConfig.limits_of`, cached)."""
        return self._members.get(user, self._default)

    def observe(self, state: UserState, obs: Observation) -> Verdict:
        if state.locked is not None:  # nothing to learn from a locked account
            return Verdict(Action.REJECT, 0.0, (f"account locked: {state.locked}",))
        limits = self.limits_of(obs.user)
        counters = record(state, obs, self.local_domains, self.config.ladder, limits.anomaly)
        if limits.anomaly:
            now = max(obs.now, state.clock)
            counters.domains_1m = novel_domains(state, now, MINUTE)
            counters.domains_10s = novel_domains(state, now, PACE_WINDOW)
        verdict = assess(counters, limits, self.config.ladder)
        self.settle(state, obs, verdict)
        return verdict

    def settle(self, state: UserState, obs: Observation, verdict: Verdict) -> None:
        """Apply what a verdict changes in the state (accepted recipients, flag, lock), at
        the user's clock (see :func:`record`)."""
        now = max(obs.now, state.clock)
        if verdict.action is Action.ACCEPT:
            if obs.recipients:
                state.accepted.add(now, len(obs.recipients))
            return
        if verdict.action is Action.REJECT:
            return
        flag(state, now, self.config.ladder, refused_by(verdict, obs))
        if verdict.action is Action.LOCK:
            state.locked = verdict.text
