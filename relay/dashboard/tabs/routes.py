"""Inbound routes tab: the account's routes (which recipients are POSTed where; removable here, added
with `relay route add` or the API) and the newest inbound deliveries with their outcome."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page

RECENT = 50


def routes(dash: Dash) -> list[Route]:
    """GET /routes and POST /routes/{route_id}/remove."""
    store = dash.store

    @page(dash)
    async def index(view: View) -> Response:
        return view.render("routes.html", tab="routes", routes=await store.list_routes(view.account.id),
                           deliveries=await store.inbound_logs(view.account.id, RECENT))

    @page(dash)
    async def remove(view: View) -> Response:
        if not await store.remove_route(view.request.path_params["route_id"], view.account.id):
            raise HTTPException(404, "No such inbound route in this account.")
        return RedirectResponse("/routes", status_code=303)

    return [Route("/routes", index, methods=["GET"]),
            Route("/routes/{route_id}/remove", remove, methods=["POST"])]


TAB = Tab("routes", "Inbound routes", 70, routes)
