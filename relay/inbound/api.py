"""The HTTPS API of inbound mail: `/v1/routes` (GET, POST, DELETE) and `GET /v1/inbound/{id}`, with the
account's key; the account only ever sees and changes its own routes and log rows."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.domain import Principal
from relay.errors import StoreError, StoreUnavailable
from relay.inbound.manage import RouteRefused, check_route, route_json
from relay.outbound import ssrf
from relay.outcomes import Outcome, reject

if TYPE_CHECKING:
    from relay.channels.http import Api

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024


def routes(api: Api) -> list[Route]:
    """The routes this feature adds to the API (listed in channels/http.py's FEATURE_ROUTES)."""
    from relay.channels.http import failure  # the API's failure envelope (imported late: http imports us)

    cfg = api.context.cfg.inbound if api.context is not None else None
    policy = ssrf.Policy(allow_private=cfg.allow_private_targets if cfg is not None else False)

    def unavailable() -> Response:
        return api.reply(reject(Outcome.TEMPORARY))

    async def caller(request: Request) -> Principal | Response:
        return await api.principal(request)

    async def list_routes(request: Request) -> Response:
        """GET /v1/routes: the account's routes, in the order they are tried."""
        principal = await caller(request)
        if isinstance(principal, Response):
            return principal
        try:
            found = await api.store.list_routes(principal.account_id)
        except StoreUnavailable:
            return unavailable()
        return JSONResponse({"ok": True, "routes": [route_json(r) for r in found]})

    async def create_route(request: Request) -> Response:
        """POST /v1/routes: a new route for the account (only within its sender domains)."""
        principal = await caller(request)
        if isinstance(principal, Response):
            return principal
        body = await api.small_body(request, MAX_BODY)  # never buffered past MAX_BODY
        if isinstance(body, Response):
            return body
        try:
            doc: Any = json.loads(body)
        except ValueError:
            return failure(400, "the body is not JSON", "INVALID")
        if not isinstance(doc, dict) or not isinstance(doc.get("match"), str) or not isinstance(doc.get("url"), str):
            return failure(400, "the body is a JSON object with match and url (strings)", "INVALID")
        unknown = set(doc) - {"match", "url", "format", "priority", "oversize_text"}
        if unknown:
            return failure(400, f"unknown field(s): {', '.join(sorted(unknown))}", "INVALID")
        try:
            spec = await check_route(doc["match"], doc["url"], format=doc.get("format") or "json",
                                     priority=doc.get("priority", 0), oversize_text=doc.get("oversize_text"),
                                     policy=policy, own_domains=principal.senders)
            route, _secret, _made = await api.store.create_route(
                principal.account_id, spec.match, spec.url, format=spec.format, priority=spec.priority,
                oversize_text=spec.oversize_text)
        except RouteRefused as exc:
            return failure(400, str(exc), "INVALID")
        except StoreUnavailable:
            return unavailable()
        except StoreError as exc:
            return failure(400, str(exc), "INVALID")
        return JSONResponse({"ok": True, "route": route_json(route)}, status_code=201)

    async def delete_route(request: Request) -> Response:
        """DELETE /v1/routes/{id}: remove one of the account's routes."""
        principal = await caller(request)
        if isinstance(principal, Response):
            return principal
        route_id = request.path_params["route_id"]
        try:
            removed = await api.store.remove_route(route_id, principal.account_id)
        except StoreUnavailable:
            return unavailable()
        if not removed:
            return failure(404, "no such route", "NOT_FOUND")
        return JSONResponse({"ok": True, "id": route_id})

    async def inbound_record(request: Request) -> Response:
        """GET /v1/inbound/{id}: one of the account's inbound log rows."""
        principal = await caller(request)
        if isinstance(principal, Response):
            return principal
        try:
            record_id = uuid.UUID(request.path_params["record_id"])
        except ValueError:
            return failure(404, "no such inbound message", "NOT_FOUND")
        try:
            record = await api.store.inbound_record(record_id, principal.account_id)
        except StoreUnavailable:
            return unavailable()
        if record is None:
            return failure(404, "no such inbound message", "NOT_FOUND")
        return JSONResponse({"ok": True, **record.as_json()})

    return [
        Route("/v1/routes", list_routes, methods=["GET"]),
        Route("/v1/routes", create_route, methods=["POST"]),
        Route("/v1/routes/{route_id}", delete_route, methods=["DELETE"]),
        Route("/v1/inbound/{record_id}", inbound_record, methods=["GET"]),
    ]
