"""Suppressions tab: the addresses this account does not mail again (bounces, complaints, added by
hand); add and remove."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.addresses import is_valid_address
from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page


def routes(dash: Dash) -> list[Route]:
    """GET/POST /suppressions and POST /suppressions/remove."""
    store = dash.store

    async def listing(view: View, status: int = 200, errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None) -> Response:
        return view.render("suppressions.html", status, tab="suppressions",
                           entries=await store.suppressions(view.account.id), errors=errors or {}, values=values or {})

    @page(dash)
    async def index(view: View) -> Response:
        return await listing(view)

    @page(dash)
    async def add(view: View) -> Response:
        address = view.form.get("address", "").strip()
        if not is_valid_address(address):
            return await listing(view, 400, {"address": "Enter an email address, such as someone@example.com."},
                                 view.form)
        await store.add_suppression(view.account.id, address, "manual")
        return RedirectResponse("/suppressions", status_code=303)

    @page(dash)
    async def remove(view: View) -> Response:
        if not await store.remove_suppression(view.account.id, view.form.get("address", "")):
            raise HTTPException(404, "This address is not on the account's suppression list.")
        return RedirectResponse("/suppressions", status_code=303)

    return [
        Route("/suppressions", index, methods=["GET"]),
        Route("/suppressions", add, methods=["POST"]),
        Route("/suppressions/remove", remove, methods=["POST"]),
    ]


TAB = Tab("suppressions", "Suppressions", 50, routes)
