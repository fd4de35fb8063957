"""API routes of issue 13: /v1/webhooks and /v1/suppressions, with the account's own key."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.addresses import is_valid_address
from relay.domain import Principal
from relay.errors import StoreError, StoreUnavailable, UsageError
from relay.events.config import WebhooksConfig
from relay.webhooks import manage

if TYPE_CHECKING:
    from relay.channels.http import Api

_MAX_BODY = 16 * 1024


def _failure(status: int, error: str, code: str) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"ok": False, "error": error, "code": code}, status_code=status, headers=headers)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def public_suppression(entry: dict[str, Any]) -> dict[str, Any]:
    """A suppression as the API shows it."""
    return {"address": entry["address"], "reason": entry["reason"],
            "messageId": None if entry["message_id"] is None else str(entry["message_id"]),
            "createdAt": _iso(entry["created_at"]), "expiresAt": _iso(entry["expires_at"])}


async def _json_body(api: Api, request: Request) -> dict[str, Any] | Response | None:
    """The body's JSON object; a Response (413) when the body is over _MAX_BODY; None when it is not one."""
    body = await api.small_body(request, _MAX_BODY)  # never buffered past _MAX_BODY
    if isinstance(body, Response):
        return body
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


Handler = Callable[[Request, Principal], Awaitable[Response]]


def routes(api: Api) -> list[Route]:
    """The routes, each behind the same key check as /v1/send."""
    webhooks_cfg = api.context.cfg.webhooks if api.context is not None else WebhooksConfig()
    store = api.store

    def keyed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            principal = await api.principal(request)
            if not isinstance(principal, Principal):
                return principal
            try:
                return await handler(request, principal)
            except StoreUnavailable:
                return _failure(503, "temporary failure, try again later", "TEMPORARY")
            except (UsageError, StoreError) as exc:
                return _failure(400, str(exc), "INVALID")
        return run

    async def list_webhooks(request: Request, principal: Principal) -> Response:
        endpoints = await store.endpoints(principal.account_id)
        return JSONResponse({"ok": True, "webhooks": [manage.public(e) for e in endpoints]})

    async def add_webhook(request: Request, principal: Principal) -> Response:
        doc = await _json_body(api, request)
        if isinstance(doc, Response):
            return doc
        if doc is None or not isinstance(doc.get("url"), str) or set(doc) - {"url", "events"}:
            return _failure(400, "expected a JSON object with url and optional events", "INVALID")
        events = doc.get("events")
        if events is not None and (not isinstance(events, list) or not all(isinstance(e, str) for e in events)):
            return _failure(400, "events must be a list of event types", "INVALID")
        endpoint, secret = await manage.add(store, webhooks_cfg, principal.account_id, doc["url"], events)
        return JSONResponse({"ok": True, "webhook": manage.public(endpoint, secret)}, status_code=201)

    async def remove_webhook(request: Request, principal: Principal) -> Response:
        if not await store.remove_endpoint(request.path_params["endpoint_id"], principal.account_id):
            return _failure(404, "no such webhook endpoint", "NOT_FOUND")
        return JSONResponse({"ok": True})

    async def rotate_webhook(request: Request, principal: Principal) -> Response:
        try:
            endpoint, secret = await manage.rotate(store, webhooks_cfg, request.path_params["endpoint_id"],
                                                   principal.account_id)
        except StoreError:
            return _failure(404, "no such webhook endpoint", "NOT_FOUND")
        return JSONResponse({"ok": True, "webhook": manage.public(endpoint, secret)})

    async def list_suppressions(request: Request, principal: Principal) -> Response:
        entries = await store.suppressions(principal.account_id)
        return JSONResponse({"ok": True, "suppressions": [public_suppression(e) for e in entries]})

    async def add_suppression(request: Request, principal: Principal) -> Response:
        doc = await _json_body(api, request)
        if isinstance(doc, Response):
            return doc
        address = doc.get("address") if doc is not None else None
        if not isinstance(address, str) or set(doc or {}) != {"address"} or not is_valid_address(address):
            return _failure(400, "expected a JSON object with a valid address", "INVALID")
        entry = await store.add_suppression(principal.account_id, address, "manual")
        api.pipeline.forget_account(principal.account_id)  # RCPT TO sees it at once in this process
        return JSONResponse({"ok": True, "suppression": public_suppression(entry)}, status_code=201)

    async def remove_suppression(request: Request, principal: Principal) -> Response:
        if not await store.remove_suppression(principal.account_id, request.path_params["address"]):
            return _failure(404, "that address is not on the suppression list", "NOT_FOUND")
        api.pipeline.forget_account(principal.account_id)
        return JSONResponse({"ok": True})

    return [
        Route("/v1/webhooks", keyed(list_webhooks), methods=["GET"]),
        Route("/v1/webhooks", keyed(add_webhook), methods=["POST"]),
        Route("/v1/webhooks/{endpoint_id}", keyed(remove_webhook), methods=["DELETE"]),
        Route("/v1/webhooks/{endpoint_id}/rotate-secret", keyed(rotate_webhook), methods=["POST"]),
        Route("/v1/suppressions", keyed(list_suppressions), methods=["GET"]),
        Route("/v1/suppressions", keyed(add_suppression), methods=["POST"]),
        Route("/v1/suppressions/{address}", keyed(remove_suppression), methods=["DELETE"]),
    ]
