"""Senders tab: the account's authorized sender addresses and domains; an operator adds them."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.addresses import is_valid_sender_pattern
from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page


def routes(dash: Dash) -> list[Route]:
    """GET/POST /senders."""
    store = dash.store

    async def listing(view: View, status: int = 200, errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None) -> Response:
        return view.render("senders.html", status, tab="senders", senders=await store.list_senders(view.account.id),
                           errors=errors or {}, values=values or {})

    @page(dash)
    async def index(view: View) -> Response:
        return await listing(view)

    @page(dash)
    async def add(view: View) -> Response:
        # Which addresses an account may send as is the operator's trust decision (until a domain's
        # ownership is proven over DNS), so account users see the list but cannot extend it.
        if not view.session.user.operator:
            raise HTTPException(403, "Only an operator can authorize senders.")
        pattern = view.form.get("pattern", "").strip().lower()
        raw_cap = view.form.get("daily_cap", "").strip()
        errors: dict[str, str] = {}
        if not is_valid_sender_pattern(pattern):
            errors["pattern"] = "Enter an email address (app@example.com) or a domain (example.com)."
        if raw_cap and not raw_cap.isdigit():
            errors["daily_cap"] = "Enter a whole number, 0 or more, or leave it empty for the default."
        if errors:
            return await listing(view, 400, errors, view.form)
        await store.add_sender(view.account.id, pattern, int(raw_cap) if raw_cap else None)
        return RedirectResponse("/senders", status_code=303)

    return [Route("/senders", index, methods=["GET"]), Route("/senders", add, methods=["POST"])]


TAB = Tab("senders", "Senders", 40, routes)
