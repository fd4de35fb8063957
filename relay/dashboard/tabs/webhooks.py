"""Webhooks tab: the account's endpoints (add with the secret shown once, rotate the secret, remove)
and each endpoint's recent deliveries with their status and attempts (relay/webhooks does the work)."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page
from relay.errors import StoreError, UsageError
from relay.events.config import WebhooksConfig


def routes(dash: Dash) -> list[Route]:
    """GET/POST /webhooks, GET /webhooks/{id}, POST /webhooks/{id}/rotate and /remove."""
    from relay.webhooks import manage  # the feature's module, only when the tab is on

    store = dash.store

    def settings() -> WebhooksConfig:
        if dash.config is None:
            raise HTTPException(503, "This dashboard was started without the server's configuration.")
        return dash.config.webhooks

    async def listing(view: View, status: int = 200, **extra: object) -> Response:
        return view.render("webhooks.html", status, tab="webhooks", endpoints=await store.endpoints(view.account.id),
                           **({"new_secret": None, "errors": {}, "values": {}} | extra))

    async def own(view: View) -> dict[str, Any]:
        endpoint_id = view.request.path_params["endpoint_id"]
        found = next((e for e in await store.endpoints(view.account.id) if e["id"] == endpoint_id), None)
        if found is None:
            raise HTTPException(404, "No such webhook endpoint in this account.")
        return found

    @page(dash)
    async def index(view: View) -> Response:
        return await listing(view)

    @page(dash)
    async def add(view: View) -> Response:
        events = [e.strip() for e in view.form.get("events", "").replace(",", " ").split() if e.strip()]
        try:
            endpoint, secret = await manage.add(store, settings(), view.account.id, view.form.get("url", "").strip(),
                                                events)
        except UsageError as exc:
            field = "events" if "event type" in str(exc) else "url"
            return await listing(view, 400, errors={field: f"{str(exc)[:1].upper()}{str(exc)[1:]}."}, values=view.form)
        return await listing(view, new_secret=(endpoint["id"], secret, "created"))

    @page(dash)
    async def show(view: View) -> Response:
        endpoint = await own(view)
        deliveries = await store.deliveries(endpoint["id"])
        return view.render("webhook.html", tab="webhooks", e=endpoint, deliveries=deliveries)

    @page(dash)
    async def rotate(view: View) -> Response:
        endpoint = await own(view)
        try:
            _, secret = await manage.rotate(store, settings(), endpoint["id"], view.account.id)
        except StoreError:
            raise HTTPException(404, "No such webhook endpoint in this account.") from None
        return await listing(view, new_secret=(endpoint["id"], secret, "rotated"))

    @page(dash)
    async def remove(view: View) -> Response:
        endpoint = await own(view)
        await store.remove_endpoint(endpoint["id"], view.account.id)
        return RedirectResponse("/webhooks", status_code=303)

    return [
        Route("/webhooks", index, methods=["GET"]),
        Route("/webhooks", add, methods=["POST"]),
        Route("/webhooks/{endpoint_id}", show, methods=["GET"]),
        Route("/webhooks/{endpoint_id}/rotate", rotate, methods=["POST"]),
        Route("/webhooks/{endpoint_id}/remove", remove, methods=["POST"]),
    ]


TAB = Tab("webhooks", "Webhooks", 60, routes)
