"""A server-side SVG chart: messages per day, stacked by status; colours come from the stylesheet
(classes, not fills), so light and dark mode each get readable ones."""

from __future__ import annotations

from datetime import date, timedelta
from xml.sax.saxutils import escape

from markupsafe import Markup

STATUSES = ("sent", "queued", "sending", "failed", "suppressed")
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 28


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above value (the top of the y axis)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def daily_series(counts: list[tuple[date, str, int]], today: date, days: int) -> list[tuple[date, dict[str, int]]]:
    """Every day of the window (empty days included), with its count per status."""
    by_day: dict[date, dict[str, int]] = {}
    for day, status, n in counts:
        by_day.setdefault(day, {})[status] = by_day.get(day, {}).get(status, 0) + n
    first = today - timedelta(days=days - 1)
    return [(first + timedelta(days=i), by_day.get(first + timedelta(days=i), {})) for i in range(days)]


def svg(series: list[tuple[date, dict[str, int]]]) -> Markup:
    """The chart as inline SVG, with a title and a text summary for screen readers."""
    total = sum(sum(c.values()) for _, c in series)
    top = nice_ceiling(max([sum(c.values()) for _, c in series] + [1]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(series))
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" '
        'xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Messages per day by status, last 30 days</title>',
        f'<desc id="chart-desc">{total} messages in {len(series)} days; the table below lists each day.</desc>',
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{round(top * frac)}</text>')
    for i, (day, counts) in enumerate(series):
        x = LEFT + i * slot + (slot - bar) / 2
        y = TOP + plot_h
        for status in STATUSES:
            n = counts.get(status, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            parts.append(f'<rect class="bar-{status}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                         f'<title>{day.isoformat()}: {n} {status}</title></rect>')
        if i % 5 == 0 or i == len(series) - 1:
            parts.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                         f'{escape(day.strftime("%b %d"))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
