"""Precision and stops that hold, driven the way the Postfix policy front end drives
the detector: one decision per RCPT, then one at END-OF-MESSAGE for the accepted recipients,
from fresh state. Each shape here was held, or leaked, under the rules before."""

from __future__ import annotations

import random

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Counters, Detector, Observation, UserState, assess

LOCAL = frozenset({"example.edu"})
T0 = 1_700_000_000.0


class Session:
    """One user's submissions through the policy server's two stages."""

    def __init__(self, user: str = "user") -> None:
        self.detector = Detector(GuardConfig(), LOCAL)
        self.state = UserState()
        self.user = user

    def send(self, now: float, rcpts: list[str], net: str = "10.1.2.0/24") -> list[Action]:
        """Every action the message met; the last one at END-OF-MESSAGE if it got there."""
        actions, accepted = [], 0
        for rcpt in rcpts:
            v = self.detector.observe(self.state, Observation(self.user, now, (rcpt,)))
            actions.append(v.action)
            accepted += v.action in (Action.ACCEPT, Action.HOLD)
        if accepted:
            eom = Observation(self.user, now, message=True, rcpt_count=accepted, network=net)
            actions.append(self.detector.observe(self.state, eom).action)
        return actions


def out(actions: list[Action]) -> bool:
    return bool(actions) and all(a is Action.ACCEPT for a in actions)


def test_burst_to_known_colleagues_is_not_an_anomaly() -> None:
    s = Session("burst")
    colleagues = [f"c{i}@example.edu" for i in range(6)]
    for i, rcpt in enumerate(colleagues):
        assert out(s.send(T0 + 5 * i, [rcpt]))
    # 20 short messages in 36 s: 12 and more a minute (held after 5 under the old rules)
    for i in range(20):
        actions = s.send(T0 + 120 + i * 36 / 19, [colleagues[i % 6]])
        assert out(actions), (i, actions)


def test_heavy_sender_to_ordinary_recipients_is_never_held() -> None:
    s = Session("heavy")
    rng = random.Random(3)
    known = [f"p{i}@example.edu" for i in range(8)] + [f"x{i}@partner.example" for i in range(4)]
    seen: list[Action] = []
    for i in range(30):  # 30 messages in two minutes
        rcpts = rng.sample(known, rng.choice((1, 2)))
        seen += s.send(T0 + i * 4.0, rcpts)
    assert Action.HOLD not in seen
    assert Action.LOCK not in seen
    assert Action.REJECT not in seen
    assert seen.count(Action.THROTTLE) == 0


def test_mail_merge_to_partner_institutions_is_never_held() -> None:
    s = Session("merge")
    rng = random.Random(5)
    partners = [f"partner{i}.ac.example" for i in range(8)]
    seen: list[Action] = []
    for i in range(40):  # one new external recipient each, one every 1.5 s
        domain = rng.choice(partners) if rng.random() < 0.7 else f"org{i}.example"
        seen += s.send(T0 + 1.5 * i, [f"m{i}@{domain}"])
    # may be throttled, never held or rejected (held after 11 under the old rules)
    assert Action.HOLD not in seen
    assert Action.LOCK not in seen
    assert Action.REJECT not in seen
    assert seen.count(Action.THROTTLE) == 0


def test_message_rate_alone_never_climbs_past_throttle() -> None:
    detector = Detector(GuardConfig(), LOCAL)
    limits, ladder = detector.limits_of("fast"), detector.config.ladder
    # a machine's pace of new domains, many refusals, a new network: but no external
    # recipients or domains beyond the hour's allowance (the evidence)
    c = Counters(
        msgs_1m=60,
        rcpts_1m=20,
        domains_1m=20,
        domains_10s=20,
        ext_rcpts_1h=20,
        domains_1h=20,
        refused_1h=500,
        new_network=True,
    )
    v = assess(c, limits, ladder)
    assert v.action is Action.THROTTLE
    assert v.anomalous
    # messages a minute to colleagues: no anomaly at all
    burst = Counters(msgs_1m=40, rcpts_1m=40, distinct_rcpts_1h=6)
    assert assess(burst, limits, ladder).action is Action.ACCEPT
    # with the evidence, the same climbs on
    c.ext_rcpts_1h, c.domains_1h = 90, 60
    assert assess(c, limits, ladder).action is Action.LOCK


def test_slow_drip_leaks_nothing_after_its_first_stop() -> None:
    s = Session("drip")
    rng = random.Random(7)
    results = []
    for i in range(70):  # one random external recipient every ~3.5 s, four minutes
        rcpt = f"v{i}@drip{rng.randrange(10**6)}.example"
        results.append(out(s.send(T0 + i * 3.5 + rng.uniform(-0.5, 0.5), [rcpt], "203.0.113.0/24")))
    first_stop = results.index(False)
    assert sum(results) <= 50
    assert not any(results[first_stop:]), results  # 1 to 5 got out before


def test_fast_blast_is_stopped_within_ten_messages_and_stays_stopped() -> None:
    s = Session("blast")
    results = [
        out(s.send(T0 + i * 0.2, [f"v{i}@spam{i}.example"], "192.0.2.0/24")) for i in range(300)
    ]
    assert sum(results) <= 10
    assert not any(results[results.index(False) :])


def test_a_stop_clears_with_its_window() -> None:
    s = Session("clears")
    for i in range(12):  # stopped at the ninth, below every hourly allowance
        s.send(T0 + i * 0.2, [f"v{i}@spam{i}.example"])
    # the same shape a minute later: still stopped (the hour's refusals hold the stop)
    assert not out(s.send(T0 + 70, ["late@other.example"]))
    # internal mail is another shape once the minute's pace is over
    assert out(s.send(T0 + 75, ["colleague@example.edu"]))
    # two hours later every window that caused it has cleared
    assert out(s.send(T0 + 2 * 3600 + 60, ["fresh@other.example"]))
