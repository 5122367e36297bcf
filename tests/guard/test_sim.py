"""The detection benchmark runs, and on a small site already meets the fast-blast target."""

from __future__ import annotations

from bench.guard_sim import SHAPES, simulate, summary


def test_small_simulation_meets_the_targets_against_the_static_baseline() -> None:
    ours, static, _, messages = simulate(users=100, attacks=3, seed=7)
    assert messages > 5000
    mine, theirs = summary(ours), summary(static)
    shapes = mine["shapes"]
    assert isinstance(shapes, dict)
    assert set(shapes) == set(SHAPES)
    assert shapes["fast-blast"]["escaped_median"] <= 10
    assert shapes["slow-drip"]["escaped_median"] <= 50
    assert mine["false_users"]["lock"] == 0  # type: ignore[index]
    assert mine["false_messages"]["throttle"] < theirs["false_messages"]["throttle"]  # type: ignore[index]
