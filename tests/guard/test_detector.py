"""The detector under a simulated clock: the ladder, ceilings, baselines, determinism."""

from __future__ import annotations

from mailwarden.guard.config import ClassLimits, GuardConfig, Ladder
from mailwarden.guard.detector import (
    Action,
    Counters,
    Detector,
    Observation,
    UserState,
    assess,
    refused_by,
)
from mailwarden.guard.window import Recent, Ring

LOCAL = frozenset({"example.edu"})
T0 = 1_700_000_000.0


def detector(**kw: object) -> Detector:
    return Detector(GuardConfig.model_validate(kw), LOCAL)


def message(user: str, now: float, rcpts: list[str], *, fp: str = "", net: str = "") -> Observation:
    return Observation(
        user=user,
        now=now,
        recipients=tuple(rcpts),
        message=True,
        rcpt_count=len(rcpts),
        network=net,
        subject_fp=fp,
    )


def test_ring_forgets_old_buckets() -> None:
    ring = Ring(5.0, 12)
    ring.add(0.0, 3)
    ring.add(30.0, 2)
    assert ring.total(30.0) == 5
    assert ring.total(59.9) == 5
    assert ring.total(61.0) == 2  # the bucket of t=0 left the minute
    assert ring.total(95.0) == 0


def test_recent_counts_distinct_values_in_window_and_is_capped() -> None:
    recent = Recent(60.0, cap=3)
    for i, value in enumerate(["a", "b", "a", "c", "d"]):
        recent.add(float(i), value)
    assert recent.count(4.0) == 3  # cap
    assert recent.count(62.5) == 2  # c and d are younger than a minute


def test_normal_user_is_never_stopped() -> None:
    d = detector()
    state = UserState()
    for i in range(24 * 6):  # one message every ten minutes for a day
        rcpts = ["colleague@example.edu", f"friend{i % 7}@example.org"]
        v = d.observe(
            state, message("alice", T0 + i * 600, rcpts, fp=f"s{i % 9}", net="192.0.2.0/24")
        )
        assert v.action is Action.ACCEPT, (i, v)


def test_fast_blast_climbs_the_ladder_to_a_lock_within_a_few_messages() -> None:
    d = detector()
    state = UserState()
    # a week of quiet history from the campus network
    for day in range(7):
        for i in range(5):
            d.observe(
                state,
                message(
                    "bob",
                    T0 + day * 86400 + i * 3600,
                    ["x@example.net"],
                    fp=f"h{i}",
                    net="192.0.2.0/24",
                ),
            )
    start = T0 + 8 * 86400
    actions = []
    for i in range(40):
        rcpts = [f"victim{i}-{k}@domain{i * 30 + k}.example" for k in range(30)]
        v = d.observe(
            state, message("bob", start + i * 2, rcpts, fp="win-a-prize", net="203.0.113.0/24")
        )
        actions.append(v.action)
        if v.action is Action.LOCK:
            break
    assert Action.LOCK in actions
    accepted = actions.count(Action.ACCEPT)
    assert accepted <= 2, actions
    # the ladder is climbed in order, never skipping back down before the lock
    ranks = [a.rank for a in actions]
    assert ranks == sorted(ranks)
    # once locked, everything is refused
    v = d.observe(state, message("bob", start + 1000, ["a@example.edu"]))
    assert v.action is Action.REJECT
    assert "locked" in v.text


def test_slow_drip_with_one_subject_is_held_then_locked() -> None:
    d = detector()
    state = UserState()
    for i in range(20):
        d.observe(
            state,
            message("carol", T0 + i * 3600, ["p@example.org"], fp=f"n{i}", net="192.0.2.0/24"),
        )
    start = T0 + 2 * 86400
    escaped = 0
    verdicts = []
    for i in range(200):
        rcpts = [f"r{i}-{k}@d{i}-{k}.example" for k in range(3)]
        v = d.observe(
            state, message("carol", start + i * 120, rcpts, fp="drip", net="198.51.100.0/24")
        )
        verdicts.append(v.action)
        if v.action is Action.ACCEPT:
            escaped += 1
        if v.action is Action.LOCK:
            break
    assert escaped <= 50, escaped
    assert Action.HOLD in verdicts
    assert Action.LOCK in verdicts


def test_new_network_alone_is_not_suspicious() -> None:
    d = detector()
    state = UserState()
    for i in range(10):
        d.observe(state, message("dave", T0 + i * 3600, ["a@example.org"], net="192.0.2.0/24"))
    v = d.observe(state, message("dave", T0 + 11 * 3600, ["a@example.org"], net="203.0.113.0/24"))
    assert v.action is Action.ACCEPT


def test_ceilings_apply_per_class_and_bulk_senders_are_allowed_more() -> None:
    d = detector(
        classes={
            "default": {"rcpts_per_minute": 10},
            "bulk": {"rcpts_per_minute": 1000, "anomaly": False},
        },
        members={"bulk": ["newsletter"]},
    )
    rcpts = [f"u{i}@example.edu" for i in range(11)]
    assert d.observe(UserState(), message("erin", T0, rcpts)).action is Action.THROTTLE
    many = [f"u{i}@d{i}.example" for i in range(500)]
    assert d.observe(UserState(), message("newsletter", T0, many)).action is Action.ACCEPT


def test_confirm_mode_never_locks_by_itself() -> None:
    ladder = Ladder(lock_mode="confirm")
    c = Counters(rcpts_24h=10_000, ext_rcpts_1h=5000, domains_1h=4000)
    v = assess(c, ClassLimits(), ladder)
    assert v.action is Action.HOLD
    assert assess(c, ClassLimits(), Ladder()).action is Action.LOCK


def test_own_baseline_raises_the_allowance() -> None:
    c = Counters(ext_rcpts_1h=150, domains_1h=10, baseline_hour=0.0)
    assert assess(c, ClassLimits(), Ladder()).action is not Action.ACCEPT
    busy = Counters(ext_rcpts_1h=150, domains_1h=10, baseline_hour=60.0)
    assert assess(busy, ClassLimits(), Ladder()).action is Action.ACCEPT


def test_same_input_same_verdicts() -> None:
    def run() -> list[tuple[str, float]]:
        d = detector()
        state = UserState()
        out = []
        for i in range(100):
            rcpts = [f"r{i}@d{i % 37}.example", "x@example.edu"]
            v = d.observe(
                state,
                message("fay", T0 + i * 13.7, rcpts, fp=f"f{i % 3}", net=f"10.{i % 4}.0.0/24"),
            )
            out.append((v.action.value, v.score))
        return out

    assert run() == run()


def test_distinct_recipients_feed_the_score() -> None:
    many = Counters(ext_rcpts_1h=30, domains_1h=5, distinct_rcpts_1h=700)
    v = assess(many, ClassLimits(), Ladder())
    assert v.action is not Action.ACCEPT
    assert any("distinct recipients" in r for r in v.reasons)
    same = Counters(ext_rcpts_1h=30, domains_1h=5, distinct_rcpts_1h=20)
    assert assess(same, ClassLimits(), Ladder()).action is Action.ACCEPT
    assert assess(many, ClassLimits(), Ladder(distinct_weight=0)).action is Action.ACCEPT


def test_accepted_recipients_are_a_window_of_their_own() -> None:
    d = detector()
    state = UserState()
    now = T0
    for i in range(20):  # a blast: the guard refuses part of it
        now = T0 + i
        d.observe(state, message("gus", now, [f"r{i}-{k}@d{i}.example" for k in range(10)]))
    attempted = state.rcpts.totals(now)[1]
    accepted = state.accepted.total(now)
    assert 0 < accepted < attempted  # the attempts the guard refused are not accepted
    # what already got out adds to the score, but only together with another signal
    base = Counters(ext_rcpts_1h=60, domains_1h=5, accepted_1h=10)
    out = Counters(ext_rcpts_1h=60, domains_1h=5, accepted_1h=80)
    assert assess(out, ClassLimits(), Ladder()).score > assess(base, ClassLimits(), Ladder()).score
    assert assess(Counters(accepted_1h=500), ClassLimits(), Ladder()).score == 0.0


def test_night_burst_of_an_office_hours_user_stands_out() -> None:
    def office_weeks(d: Detector, state: UserState) -> float:
        start = T0 - T0 % 86400  # midnight UTC
        for day in range(8):
            for hour in range(9, 17):
                for k in range(8):  # 8 external recipients an hour
                    now = start + day * 86400 + hour * 3600 + k * 450
                    rcpts = [f"p{hour}-{k}@partner{k}.example", "x@example.edu"]
                    assert d.observe(state, message("hal", now, rcpts)).action is Action.ACCEPT
        return start + 8 * 86400

    def burst(d: Detector, state: UserState, at: float) -> float:
        """The highest score of 30 external recipients in 30 minutes (below every floor of
        the busiest-hour allowance)."""
        top = 0.0
        for i in range(30):
            v = d.observe(state, message("hal", at + i * 60, [f"n{i}@d{i % 9}.example"]))
            assert v.action is Action.ACCEPT  # one weak signal alone never stops mail
            top = max(top, v.score)
        return top

    d = detector()
    state = UserState()
    night = office_weeks(d, state) + 3 * 3600  # 03:00
    assert burst(d, state, night) > 0.0
    day_state = UserState()
    noon = office_weeks(d, day_state) + 10 * 3600  # the same at 10:00 is the user's habit
    assert burst(d, day_state, noon) == 0.0
    off = detector(ladder={"profile_weight": 0})
    off_state = UserState()
    assert burst(off, off_state, office_weeks(off, off_state) + 3 * 3600) == 0.0
    # a young profile is not trusted
    young = UserState()
    assert burst(d, young, T0 - T0 % 86400 + 3 * 3600) == 0.0


def test_only_anomalous_refusals_count_as_attempts_after_a_refusal() -> None:
    limits, ladder = ClassLimits(), Ladder()
    ceiling = assess(Counters(rcpts_1m=150), limits, ladder)  # one big announcement
    assert ceiling.action is Action.THROTTLE
    assert refused_by(ceiling, message("ann", T0, ["a@example.edu"])) == 0
    spread = assess(Counters(ext_rcpts_1h=85, domains_1h=20), limits, ladder)
    assert spread.action is Action.THROTTLE
    assert refused_by(spread, message("spam", T0, ["a@b.example", "c@d.example"])) == 2
    # refusals of a throttle for the pace alone add nothing: hold needs the evidence
    pace = Counters(msgs_1m=30, rcpts_1m=30, domains_1m=30, domains_10s=30, refused_1h=400)
    assert assess(pace, limits, ladder).action is Action.THROTTLE


def test_a_stop_holds_while_the_attempts_keep_their_shape() -> None:
    limits, ladder = ClassLimits(), Ladder()
    # one new external domain, nothing unusual on its own ...
    one = Counters(rcpts_1m=1, domains_1m=1, domains_10s=1, ext_rcpts_1h=1, domains_1h=1)
    assert assess(one, limits, ladder).action is Action.ACCEPT
    # ... but refused while an anomalous stop is less than an hour old
    one.refused_1h = 3
    stopped = assess(one, limits, ladder)
    assert stopped.action is Action.THROTTLE
    assert not stopped.anomalous  # it keeps the stop, it does not renew it
    # mail of another shape (colleagues) goes through
    internal = Counters(rcpts_1m=4, domains_1m=1, refused_1h=3)
    assert assess(internal, limits, ladder).action is Action.ACCEPT


def test_a_slow_run_with_one_subject_keeps_its_day_count() -> None:
    """Six in the hour used to replace the day's count of 40 (and let the run out again)."""
    c = Counters(same_subject_1h=6, same_subject_24h=40)
    assert assess(c, ClassLimits(), Ladder()).action is Action.HOLD
