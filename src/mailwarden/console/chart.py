"""The guard's decisions per hour as an SVG bar chart, drawn on the server (no script).

Pure: counts in, markup out. Every text is escaped; the bars are stacked by action in a fixed
order and colour, each with a ``<title>`` so that a pointer (and a screen reader) gets the
numbers, and the figure as a whole has a text alternative the page puts beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape

from mailwarden.guard.store.base import Event

ACTIONS = ("throttle", "hold", "lock", "reject")
"""Guard decisions shown, bottom to top (admin actions are not decisions)."""
COLOURS = {"throttle": "#8a6d00", "hold": "#b35900", "lock": "#b3261e", "reject": "#6b3fa0"}
HOURS = 24
WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 40, 30, 10


@dataclass(frozen=True, slots=True)
class HourCounts:
    start: float
    """Start of the hour (epoch seconds)."""
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def per_hour(events: list[Event], now: float, hours: int = HOURS) -> list[HourCounts]:
    """Decisions in each of the last ``hours`` whole hours up to ``now`` (the current, partial
    hour last)."""
    current = now - now % 3600
    first = current - (hours - 1) * 3600
    buckets = [HourCounts(first + i * 3600, dict.fromkeys(ACTIONS, 0)) for i in range(hours)]
    for event in events:
        if event.action not in ACTIONS or not first <= event.when < current + 3600:
            continue
        if "by" in event.detail:  # a lock by hand: an admin's action, not a decision
            continue
        buckets[int((event.when - first) // 3600)].counts[event.action] += 1
    return buckets


def _nice_max(value: int) -> int:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if value <= step * 4:
            return step * 4
    return value


def render_svg(hours: list[HourCounts], labels: dict[str, str], title: str) -> str:
    """The chart; ``labels`` translates the action names (legend and tooltips)."""
    top = _nice_max(max((h.total for h in hours), default=0))
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(hours), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="chart-title" class="chart">',
        f'<title id="chart-title">{escape(title)}</title>',
    ]
    for i in range(5):  # grid lines and the scale
        value = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value}</text>'
        )
    for i, hour in enumerate(hours):
        x = LEFT + i * slot + slot * 0.15
        y = TOP + plot_h
        for action in ACTIONS:
            count = hour.counts.get(action, 0)
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            when = time.strftime("%H:00", time.localtime(hour.start))
            tip = f"{when} {labels.get(action, action)}: {count}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[action]}"><title>{escape(tip)}</title></rect>'
            )
        if i % 3 == 0 or i == len(hours) - 1:
            label = time.strftime("%H", time.localtime(hour.start))
            parts.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                f'class="axis">{label}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def summary(hours: list[HourCounts]) -> dict[str, int]:
    """Totals over the whole chart, per action: the text next to the figure."""
    return {a: sum(h.counts.get(a, 0) for h in hours) for a in ACTIONS}
