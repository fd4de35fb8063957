"""Logs tab: the account's messages, newest first, filtered, a page at a time; one message's page."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page
from relay.store.dashboard import Cursor, LogFilter

CHANNELS = ("api", "smtp", "inbound")
STATUSES = ("sending", "sent", "queued", "failed", "suppressed")
PAGE_SIZE = 50


def as_uuid(text: str) -> uuid.UUID | None:
    """text as a message id, or None."""
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None


def parse_filter(params: dict[str, str]) -> tuple[LogFilter, dict[str, str]]:
    """The filter from the query string, and the errors (by field) of values that make no sense."""
    errors: dict[str, str] = {}
    channel = params.get("channel") or None
    status = params.get("status") or None
    if channel and channel not in CHANNELS:
        errors["channel"] = f"Choose one of: {', '.join(CHANNELS)}."
        channel = None
    if status and status not in STATUSES:
        errors["status"] = f"Choose one of: {', '.join(STATUSES)}."
        status = None
    days: dict[str, date | None] = {}
    for name in ("since", "until"):
        raw = params.get(name) or ""
        try:
            days[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            errors[name] = "Enter a date as YYYY-MM-DD."
            days[name] = None
    sender = (params.get("q") or "").strip() or None
    return LogFilter(channel, status, sender, days["since"], days["until"]), errors


def parse_cursor(raw: str) -> Cursor | None:
    """The 'after' parameter: <created_at ISO>_<message id>."""
    stamp, _, ident = raw.rpartition("_")
    try:
        return Cursor(datetime.fromisoformat(stamp), uuid.UUID(ident))
    except ValueError:
        return None


def routes(dash: Dash) -> list[Route]:
    """GET /logs and GET /logs/{message_id}."""

    @page(dash)
    async def logs(view: View) -> Response:
        params = dict(view.request.query_params)
        query = (params.get("q") or "").strip()
        if (message_id := as_uuid(query)) is not None:  # a pasted message id opens that message
            return RedirectResponse(f"/logs/{message_id}", status_code=303)
        where, errors = parse_filter(params)
        after = parse_cursor(params.get("after", "")) if params.get("after") else None
        rows = await dash.store.log_page(view.account.id, where, after, PAGE_SIZE + 1)
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        kept = {k: v for k, v in params.items() if k != "after" and v}
        next_url = None
        if more:
            last = rows[-1]
            next_url = "/logs?" + urlencode(kept | {"after": f"{last['created_at'].isoformat()}_{last['id']}"})
        return view.render("logs.html", 400 if errors else 200, tab="logs", rows=rows, params=params,
                           errors=errors, channels=CHANNELS, statuses=STATUSES, next_url=next_url,
                           first_url="/logs?" + urlencode(kept) if after else None, filtered=bool(kept))

    @page(dash)
    async def message(view: View) -> Response:
        message_id = as_uuid(view.request.path_params["message_id"])
        found = await dash.store.account_message(view.account.id, message_id) if message_id else None
        if found is None:
            raise HTTPException(404, "No message with this id in this account.")
        ledger = await dash.store.message_ledger(found["id"])
        recipients = await dash.store.recipients(found["id"])
        events = await dash.store.events(found["id"])
        return view.render("message.html", tab="logs", m=found, ledger=ledger, recipients=recipients, events=events)

    return [Route("/logs", logs, methods=["GET"]), Route("/logs/{message_id}", message, methods=["GET"])]


TAB = Tab("logs", "Logs", 20, routes)
