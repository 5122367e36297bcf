"""Detection benchmark: a simulated fortnight of a university's outbound mail.

The first week teaches the detector every user's habits (as a deployment would after a week in
production); the second week is scored. Into it we inject compromised accounts of four shapes
and measure, for the guard's detector and for a static per-user rate limit configured like
policyd-rate-limit's shipped defaults (10 recipients a minute and 150 a day per SASL user,
tempfail above) — both fed the very same messages:

* per attack shape: messages that escaped before the account was stopped (median / max) and
  seconds from the first spam message to the lock;
* on normal users: messages throttled, held or locked (each a false positive), and how many
  distinct users were hit.

The traffic model (all assumptions, see docs/guard.md "Detection benchmark"):

* users' daily volume is log-normal (median 4 messages, a few send hundreds); office hours
  carry 80 % of the mail, evenings the rest, weekends 15 %, one public holiday 10 %, and one
  user in ten takes five days of holiday;
* recipients per message: mostly 1–3, 3 % group mails of 5–40, 0.3 % announcements of 50–250
  (mostly internal); each user writes to a personal set of external domains (Zipf), now and
  then a new one; half the messages continue one of the user's recent threads (same subject);
* users send from 1–3 usual networks; one in five is mobile (a new carrier network on 30 % of
  messages); travellers appear on a new network for a day;
* 50 list owners and 10 newsletter senders are on the bulk allow-list; newsletters go out in
  campaigns of 2,000–5,000 recipients in 50-recipient messages;
* attacks: ``fast-blast`` (webmail script, a message every 2–6 s to 20–50 random external
  domains, one subject with changing numbers, the attacker's network), ``slow-drip`` (a
  message every 8–15 min to 1–3 domains for a day, same kind of subject, the attacker's
  network — under the static daily limit), ``many-domains`` (malware on the user's own PC:
  every 20–40 s to 5–10 new domains, a new subject each time, the user's usual network) and
  ``new-network-burst`` (every 10–20 s, 3–8 recipients from a pool of 500 domains, two
  subjects, a new network).

Run: ``.venv/bin/python -m bench.guard_sim`` (10,000 users, about a minute on one core);
``--users 1000`` for a quick look; ``--format json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Observation, UserState

DAY = 86400.0
T0 = 1_704_672_000.0  # a Monday, 00:00 UTC
WARMUP_DAYS = 7
LOCAL = frozenset({"uni.example"})
SHAPES = (
    "fast-blast",
    "wide-blast",
    "slow-drip",
    "script-blast",
    "many-domains",
    "new-network-burst",
)
TARGETS = {"fast-blast": 10, "wide-blast": 3, "slow-drip": 50}
"""Messages out per attacked account at most; wide blast also ≤ 150 recipients."""
WIDE_RCPTS_TARGET = 150
THROTTLED_TARGET = 0.01
"""Share of honest messages throttled at most."""


@dataclass(frozen=True, slots=True)
class Msg:
    when: float
    rcpts: tuple[str, ...]
    fp: str
    net: str
    attack: bool = False


@dataclass
class Outcome:
    """What one limiter did to one user's stream."""

    actions: dict[Action, int] = field(default_factory=dict)
    escaped: int = 0
    escaped_rcpts: int = 0
    after_stop: int = 0
    """Attack messages accepted after the attack's first refusal (the target is 0)."""
    lock_after: float | None = None
    stopped_after: float | None = None


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def office_time(rng: random.Random) -> float:
    """Seconds into a day: 80 % between 08:00 and 18:00, the rest 06:00–24:00."""
    if rng.random() < 0.8:
        return rng.uniform(8 * 3600, 18 * 3600)
    return rng.uniform(6 * 3600, 24 * 3600)


class NormalUser:
    """One person's mail habits."""

    def __init__(self, uid: int, rng: random.Random) -> None:
        self.uid = uid
        self.rng = rng
        self.daily = min(300.0, rng.lognormvariate(math.log(4), 1.1))
        self.internal_share = rng.betavariate(3, 2)
        n_domains = 2 + int(rng.paretovariate(1.2))
        self.domains = [f"c{uid}-{i}.example" for i in range(min(n_domains, 200))]
        self.nets = [
            f"10.{rng.randrange(200)}.{rng.randrange(256)}.0/24" for _ in range(rng.randint(1, 3))
        ]
        self.mobile = rng.random() < 0.2
        self.holiday_start = rng.randrange(14) if rng.random() < 0.1 else -99

    def domain(self) -> str:
        rng = self.rng
        if rng.random() < 0.1:
            return f"new{rng.randrange(10**6)}.example"
        i = min(int(rng.paretovariate(1.0)) - 1, len(self.domains) - 1)
        return self.domains[i]

    def recipients(self) -> tuple[str, ...]:
        rng = self.rng
        r = rng.random()
        if r < 0.003:
            n, internal = rng.randint(50, 250), 0.9
        elif r < 0.033:
            n, internal = rng.randint(5, 40), self.internal_share
        else:
            n, internal = 1 + min(int(rng.expovariate(1.2)), 5), self.internal_share
        out = []
        for k in range(n):
            if rng.random() < internal:
                out.append(f"p{rng.randrange(30000)}@uni.example")
            else:
                out.append(f"x{k}@{self.domain()}")
        return tuple(out)

    def messages(self, days: int) -> Iterator[Msg]:
        rng = self.rng
        threads: deque[int] = deque(maxlen=5)
        next_thread = 0
        for day in range(days):
            factor = 1.0
            if day % 7 >= 5:
                factor = 0.15
            if day == WARMUP_DAYS + 2:  # a public holiday in the scored week
                factor = 0.1
            if self.holiday_start <= day < self.holiday_start + 5:
                factor = 0.05
            travel = rng.random() < 0.05
            travel_net = f"172.{rng.randrange(32)}.{rng.randrange(256)}.0/24"
            times = sorted(office_time(rng) for _ in range(poisson(rng, self.daily * factor)))
            for t in times:
                if threads and rng.random() < 0.5:
                    thread = rng.choice(threads)
                else:
                    thread = next_thread
                    next_thread += 1
                    threads.append(thread)
                if travel:
                    net = travel_net
                elif self.mobile and rng.random() < 0.3:
                    net = f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.0/24"
                else:
                    net = rng.choice(self.nets)
                yield Msg(T0 + day * DAY + t, self.recipients(), f"u{self.uid}t{thread}", net)


def bulk_messages(uid: int, rng: random.Random, days: int, newsletter: bool) -> Iterator[Msg]:
    for day in range(days):
        if day % 7 >= 5:
            continue
        if newsletter and rng.random() < 0.3:
            total = rng.randint(2000, 5000)
            start = T0 + day * DAY + office_time(rng)
            for i in range(0, total, 50):
                rcpts = tuple(f"s{i + k}@d{(i + k) % 1500}.example" for k in range(50))
                yield Msg(start + i / 50 * 2.0, rcpts, f"n{uid}d{day}", "10.0.0.0/24")
        elif not newsletter and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                n = rng.randint(200, 1500)
                rcpts = tuple(f"m{k}@l{k % 300}.example" for k in range(n))
                yield Msg(
                    T0 + day * DAY + office_time(rng), rcpts, f"l{uid}{rng.random()}", "10.0.1.0/24"
                )


def attack_messages(shape: str, user: NormalUser, start: float, rng: random.Random) -> list[Msg]:
    out: list[Msg] = []
    t = start
    attacker_net = f"203.0.{rng.randrange(113, 200)}.0/24"
    if shape == "fast-blast":
        # a webmail script: ~5 messages a second, one random external recipient each
        for _ in range(2000):
            rcpts: tuple[str, ...] = (
                f"v{rng.randrange(10**9)}@spam{rng.randrange(10**6)}.example",
            )
            out.append(Msg(t, rcpts, f"note{rng.randrange(10**6)}", attacker_net, True))
            t += rng.uniform(0.15, 0.25)
    elif shape == "wide-blast":
        # direct submission from rotating addresses: 50 recipients a message, at most 4 per
        # domain, one message every 3 s, for ten minutes
        while t < start + 600:
            domains = [f"w{rng.randrange(10**6)}.example" for _ in range(13)]
            rcpts = tuple(f"v{rng.randrange(10**9)}@{domains[k // 4]}" for k in range(50))
            net = f"198.{rng.randrange(18, 20)}.{rng.randrange(256)}.0/24"
            out.append(Msg(t, rcpts, "account-verification", net, True))
            t += 3.0
    elif shape == "script-blast":
        for _ in range(2000):
            n = rng.randint(20, 50)
            rcpts = tuple(
                f"v{rng.randrange(10**9)}@spam{rng.randrange(10**6)}.example" for _ in range(n)
            )
            out.append(Msg(t, rcpts, "suspend-your-account", attacker_net, True))
            t += rng.uniform(2, 6)
    elif shape == "slow-drip":
        while t < start + DAY:
            rcpts = tuple(
                f"v{rng.randrange(10**9)}@drip{rng.randrange(10**6)}.example"
                for _ in range(rng.randint(1, 3))
            )
            out.append(Msg(t, rcpts, "invoice-attached", attacker_net, True))
            t += rng.uniform(8 * 60, 15 * 60)
    elif shape == "many-domains":
        while t < start + 2 * 3600:
            rcpts = tuple(
                f"v{rng.randrange(10**9)}@md{rng.randrange(10**6)}.example"
                for _ in range(rng.randint(5, 10))
            )
            out.append(Msg(t, rcpts, f"rnd{rng.random()}", user.nets[0], True))
            t += rng.uniform(20, 40)
    elif shape == "new-network-burst":
        subjects = ("lottery", "parcel")
        while t < start + 3600:
            rcpts = tuple(
                f"v{rng.randrange(10**9)}@pool{rng.randrange(500)}.example"
                for _ in range(rng.randint(3, 8))
            )
            out.append(Msg(t, rcpts, rng.choice(subjects), attacker_net, True))
            t += rng.uniform(10, 20)
    return out


class StaticLimit:
    """policyd-rate-limit's shipped defaults: per SASL user, 10 recipients a minute and 150 a
    day (sliding windows over accepted recipients), ``defer_if_permit`` above."""

    LIMITS = ((10, 60.0), (150, DAY))

    def __init__(self) -> None:
        self.accepted: deque[float] = deque()

    def message(self, msg: Msg) -> Action:
        accepted_any = deferred_any = False
        for _ in msg.rcpts:
            if deferred_any:
                break  # the windows only fill up within one message
            while self.accepted and self.accepted[0] <= msg.when - DAY:
                self.accepted.popleft()
            over = False
            for limit, window in self.LIMITS:
                if window >= DAY:
                    count = len(self.accepted)
                else:
                    count = 0
                    for ts in reversed(self.accepted):
                        if ts <= msg.when - window:
                            break
                        count += 1
                if count >= limit:
                    over = True
            if over:
                deferred_any = True
            else:
                accepted_any = True
                self.accepted.append(msg.when)
        if deferred_any:
            return Action.THROTTLE if not accepted_any else Action.HOLD  # HOLD = partial
        return Action.ACCEPT


def run_stream(
    msgs: list[Msg],
    user: str,
    detector: Detector | None,
    scored_from: float,
    attack_start: float | None,
) -> Outcome:
    out = Outcome()
    state = UserState()
    static = StaticLimit()
    for msg in msgs:
        if detector is not None:
            obs = Observation(
                user=user,
                now=msg.when,
                recipients=msg.rcpts,
                message=True,
                rcpt_count=len(msg.rcpts),
                network=msg.net,
                subject_fp=msg.fp,
            )
            action = detector.observe(state, obs).action
            escaped = action is Action.ACCEPT
        else:
            action = static.message(msg)
            escaped = action in (Action.ACCEPT, Action.HOLD)  # partial delivery escapes
            if action is Action.HOLD:
                action = Action.THROTTLE
        if msg.when < scored_from:
            continue
        if attack_start is not None and msg.attack:
            if escaped:
                out.escaped += 1
                out.escaped_rcpts += len(msg.rcpts)
                if out.stopped_after is not None:
                    out.after_stop += 1
            elif out.stopped_after is None:
                out.stopped_after = msg.when - attack_start
            if action is Action.LOCK and out.lock_after is None:
                out.lock_after = msg.when - attack_start
        elif attack_start is None or msg.when < attack_start:
            out.actions[action] = out.actions.get(action, 0) + 1
    return out


@dataclass
class Totals:
    false: dict[str, int] = field(default_factory=lambda: {"throttle": 0, "hold": 0, "lock": 0})
    false_users: dict[str, set[int]] = field(
        default_factory=lambda: {"throttle": set(), "hold": set(), "lock": set()}
    )
    escaped: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SHAPES})
    escaped_rcpts: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SHAPES})
    after_stop: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SHAPES})
    lock_after: dict[str, list[float | None]] = field(
        default_factory=lambda: {s: [] for s in SHAPES}
    )
    messages: int = 0


def simulate(users: int, attacks: int, seed: int) -> tuple[Totals, Totals, float, int]:
    rng = random.Random(seed)
    bulk = {f"list{i}" for i in range(50)} | {f"news{i}" for i in range(10)}
    config = GuardConfig.model_validate({"members": {"bulk": sorted(bulk)}})
    detector = Detector(config, LOCAL)
    days = WARMUP_DAYS + 7
    scored_from = T0 + WARMUP_DAYS * DAY
    ours, static = Totals(), Totals()
    victims: dict[int, tuple[str, float]] = {}
    pick = rng.sample(range(users), min(users, attacks * len(SHAPES)))
    for k, uid in enumerate(pick):
        shape = SHAPES[k % len(SHAPES)]
        victims[uid] = (shape, scored_from + rng.uniform(0, 6 * DAY))
    started = time.perf_counter()
    total_msgs = 0
    for uid in range(users):
        urng = random.Random(seed * 1_000_003 + uid)
        person = NormalUser(uid, urng)
        msgs = list(person.messages(days))
        attack_start = None
        shape = ""
        if uid in victims:
            shape, attack_start = victims[uid]
            msgs.extend(attack_messages(shape, person, attack_start, urng))
            msgs.sort(key=lambda m: m.when)
        total_msgs += len(msgs)
        _account(
            ours,
            uid,
            shape,
            attack_start,
            run_stream(msgs, f"u{uid}", detector, scored_from, attack_start),
        )
        _account(
            static,
            uid,
            shape,
            attack_start,
            run_stream(msgs, f"u{uid}", None, scored_from, attack_start),
        )
    for i, name in enumerate(sorted(bulk)):
        brng = random.Random(seed * 7 + i)
        msgs = list(bulk_messages(i, brng, days, name.startswith("news")))
        total_msgs += len(msgs)
        _account(ours, users + i, "", None, run_stream(msgs, name, detector, scored_from, None))
        _account(static, users + i, "", None, run_stream(msgs, name, None, scored_from, None))
    return ours, static, time.perf_counter() - started, total_msgs


def _account(t: Totals, uid: int, shape: str, attack_start: float | None, o: Outcome) -> None:
    for action, n in o.actions.items():
        key = {Action.THROTTLE: "throttle", Action.HOLD: "hold", Action.LOCK: "lock"}.get(action)
        if key is not None:
            t.false[key] += n
            t.false_users[key].add(uid)
        t.messages += n
    if attack_start is not None:
        t.escaped[shape].append(o.escaped)
        t.escaped_rcpts[shape].append(o.escaped_rcpts)
        t.after_stop[shape].append(o.after_stop)
        t.lock_after[shape].append(o.lock_after)


def summary(t: Totals) -> dict[str, object]:
    shapes = {}
    for shape in SHAPES:
        esc = t.escaped[shape]
        locks = [x for x in t.lock_after[shape] if x is not None]
        shapes[shape] = {
            "accounts": len(esc),
            "escaped_median": statistics.median(esc) if esc else None,
            "escaped_max": max(esc) if esc else None,
            "escaped_rcpts_max": max(t.escaped_rcpts[shape], default=None),
            "after_stop_max": max(t.after_stop[shape], default=None),
            "locked": len(locks),
            "seconds_to_lock_median": round(statistics.median(locks), 1) if locks else None,
            "seconds_to_lock_max": round(max(locks), 1) if locks else None,
        }
    return {
        "shapes": shapes,
        "false_messages": dict(t.false),
        "false_users": {k: len(v) for k, v in t.false_users.items()},
        "normal_messages_scored": t.messages,
        "throttled_share": t.false["throttle"] / t.messages if t.messages else 0.0,
    }


def verdicts(mine: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, ours, target, met) for every precision target this benchmark measures."""
    shapes = mine["shapes"]
    rows: list[tuple[str, str, str, bool]] = []
    for shape, most in TARGETS.items():
        worst = shapes[shape]["escaped_max"] or 0
        rows.append((f"{shape}: messages out (max)", str(worst), f"≤ {most}", worst <= most))
    wide = shapes["wide-blast"]["escaped_rcpts_max"] or 0
    rows.append(
        ("wide-blast: recipients out (max)", str(wide), f"≤ {WIDE_RCPTS_TARGET}", wide <= 150)
    )
    after = max((s["after_stop_max"] or 0) for s in shapes.values())
    rows.append(("attack messages out after first stop (max)", str(after), "0", after == 0))
    users = mine["false_users"]["hold"] + mine["false_users"]["lock"]
    rows.append(("honest users held or locked", str(users), "0", users == 0))
    share = mine["throttled_share"]
    rows.append(
        (
            "honest messages throttled",
            f"{share:.3%} ({mine['false_messages']['throttle']} msgs, "
            f"{mine['false_users']['throttle']} users)",
            f"≤ {THROTTLED_TARGET:.0%}",
            share <= THROTTLED_TARGET,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--attacks", type=int, default=25, help="accounts per attack shape")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    ours, static, seconds, total = simulate(args.users, args.attacks, args.seed)
    result = {
        "users": args.users,
        "messages": total,
        "seconds": round(seconds, 1),
        "mailwarden": summary(ours),
        "static_policyd_rate_limit_defaults": summary(static),
    }
    result["targets"] = [
        {"what": w, "ours": o, "target": t, "met": m} for w, o, t, m in verdicts(summary(ours))
    ]
    if args.format == "json":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"# {args.users} users + 60 bulk senders, {total} messages over {WARMUP_DAYS} + 7 days "
        f"(second week scored), seed {args.seed}, {seconds:.0f} s"
    )
    print(
        f"{'shape':<19} {'limiter':<11} {'escaped med/max':>16} {'locked':>8} "
        f"{'s to lock med/max':>20} {'after stop':>10}"
    )
    for shape in SHAPES:
        for label, data in (
            ("mailwarden", result["mailwarden"]),
            ("static", result["static_policyd_rate_limit_defaults"]),
        ):
            s = data["shapes"][shape]
            lock = (
                f"{s['seconds_to_lock_median']}/{s['seconds_to_lock_max']}"
                if s["locked"]
                else "never"
            )
            print(
                f"{shape:<19} {label:<11} {s['escaped_median']!s:>7}/{s['escaped_max']!s:<8} "
                f"{s['locked']:>4}/{s['accounts']:<3} {lock:>20} {s['after_stop_max']!s:>10}"
            )
    for label, data in (
        ("mailwarden", result["mailwarden"]),
        ("static", result["static_policyd_rate_limit_defaults"]),
    ):
        f, u = data["false_messages"], data["false_users"]
        print(
            f"false positives {label:<11} throttled {f['throttle']} msgs ({u['throttle']} users)"
            f", held {f['hold']} ({u['hold']}), locked {f['lock']} ({u['lock']})"
        )
    print("# targets")
    met_all = True
    for what, mine, target, met in verdicts(summary(ours)):
        met_all &= met
        print(f"{what:<44} ours {mine:<36} target {target:<6} {'met' if met else 'NOT MET'}")
    print("all targets met" if met_all else "some targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
