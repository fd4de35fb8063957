"""Overview tab: the balance, messages per day by status (30 days, SVG), the credit ledger."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from relay.dashboard import chart
from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page

DAYS = 30
# The chart counts up to a month of an account's messages (0.2-0.4 s for 200,000 of them, see
# bench/dashboard_logs.py), so it is reused for this long; the Logs tab is the live view.
CHART_SECONDS = 60.0


def routes(dash: Dash) -> list[Route]:
    """GET /overview."""

    @page(dash)
    async def overview(view: View) -> Response:
        today = dash.clock().date()
        counts = await dash.remember(("daily_counts", view.account.id, today), CHART_SECONDS,
                                     lambda: dash.store.daily_counts(view.account.id, DAYS, today))
        series = chart.daily_series(counts, today, DAYS)
        totals = {s: sum(c.get(s, 0) for _, c in series) for s in chart.STATUSES}
        ledger = await dash.store.ledger(view.account.id)
        return view.render("overview.html", tab="overview", chart=chart.svg(series), series=series,
                           statuses=chart.STATUSES, totals=totals, ledger=ledger)

    return [Route("/overview", overview, methods=["GET"])]


TAB = Tab("overview", "Overview", 10, routes)
