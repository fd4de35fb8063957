"""Pure parts of the dashboard: the chart's scale and days, the login redirect target, the filters."""

from __future__ import annotations

from datetime import date

from relay.dashboard import chart
from relay.dashboard.auth import safe_next
from relay.dashboard.tabs import discover
from relay.dashboard.tabs.logs import as_uuid, parse_cursor, parse_filter


def test_nice_ceiling() -> None:
    assert [chart.nice_ceiling(n) for n in (0, 1, 2, 3, 7, 10, 11, 199, 501)] == [1, 1, 2, 5, 10, 10, 20, 200, 1000]


def test_daily_series_fills_every_day() -> None:
    today = date(2026, 3, 2)
    series = chart.daily_series([(date(2026, 3, 1), "sent", 4), (date(2026, 3, 1), "failed", 1),
                                 (date(2026, 2, 1), "sent", 9)], today, 30)
    assert len(series) == 30 and series[0][0] == date(2026, 2, 1) and series[-1][0] == today
    assert series[-2][1] == {"sent": 4, "failed": 1} and series[-1][1] == {} and series[0][1] == {"sent": 9}
    svg = str(chart.svg(series))
    assert svg.count('class="bar-sent"') == 2 and svg.count('class="bar-failed"') == 1
    assert "<title>2026-03-01: 4 sent</title>" in svg and 'role="img"' in svg


def test_login_redirects_only_within_the_site() -> None:
    assert safe_next("/logs?status=failed") == "/logs?status=failed"
    for bad in (None, "", "https://evil.test/", "//evil.test/x", "/\\evil.test", "logs"):
        assert safe_next(bad) == "/"


def test_log_filter_parsing() -> None:
    where, errors = parse_filter({"channel": "smtp", "status": "bogus", "since": "2026-01-02", "until": "x",
                                  "q": " App@Example.com "})
    assert where.channel == "smtp" and where.status is None and where.since == date(2026, 1, 2)
    assert where.sender == "App@Example.com" and set(errors) == {"status", "until"}
    assert as_uuid(" 8a0c3c4e-9c77-4a4e-9a51-0c1f2b3c4d5e ") is not None and as_uuid("app@x.test") is None
    assert parse_cursor("garbage") is None
    cursor = parse_cursor("2026-01-02T03:04:05+00:00_8a0c3c4e-9c77-4a4e-9a51-0c1f2b3c4d5e")
    assert cursor is not None and cursor.created_at.year == 2026


def test_tabs_are_found_in_order() -> None:
    assert [t.slug for t in discover()][:4] == ["overview", "logs", "keys", "senders"]


async def test_remember_reuses_for_its_time_only() -> None:
    from relay.dashboard.settings import DashboardConfig
    from relay.dashboard.web import Dash

    dash = Dash(store=None, cfg=DashboardConfig(), key_secret=b"", https=False)  # type: ignore[arg-type]
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    assert await dash.remember(("k", 1), 60, compute) == 1
    assert await dash.remember(("k", 1), 60, compute) == 1  # reused
    assert await dash.remember(("k", 2), 60, compute) == 2  # another key
    assert await dash.remember(("k", 1), 0, compute) == 3  # expired
