"""The OpenAPI fragment of inbound mail (/v1/routes, /v1/inbound/{id}), merged into relay/openapi.py."""

from __future__ import annotations

from typing import Any

from relay.openapi_parts import BEARER, KEY_FAILURES, as_json, failure, ref

_BEARER = BEARER
_COMMON = {
    **KEY_FAILURES,
    "503": failure("The database is unreachable.", "TEMPORARY", retry_after=True),
}
_NOT_FOUND = failure("No such item of this account.", "NOT_FOUND")

PATHS: dict[str, Any] = {
    "/v1/routes": {
        "get": {
            "operationId": "listRoutes",
            "summary": "The account's inbound routes, in the order they are tried.",
            "security": _BEARER,
            "responses": {"200": {"description": "The routes.", "content": as_json(ref("schemas", "RouteList"))},
                          **_COMMON},
        },
        "post": {
            "operationId": "createRoute",
            "summary": "Route inbound mail for an address or a whole domain to the app's URL.",
            "description": (
                "The match is an exact address or `*@domain` inside one of the account's sender domains "
                "(regular-expression routes are the operator's, `relay route add`). The URL must be http or "
                "https and resolve to public addresses (unless `inbound.allow_private_targets`). Every POST "
                "to it is signed with the account's Standard Webhooks secret (`relay webhook secret`)."),
            "security": _BEARER,
            "requestBody": {"required": True, "content": as_json(ref("schemas", "RouteRequest"))},
            "responses": {
                "201": {"description": "Created.", "content": as_json(ref("schemas", "RouteCreated"))},
                "400": failure("Not JSON, unknown fields, a bad match, a refused URL, or a domain that is not "
                                "the account's.", "INVALID"),
                "413": failure("The body is over 16 KB.", "TOO_LARGE"),
                **_COMMON,
            },
        },
    },
    "/v1/routes/{routeId}": {
        "delete": {
            "operationId": "deleteRoute",
            "summary": "Delete one of the account's routes.",
            "security": _BEARER,
            "parameters": [{"name": "routeId", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "Deleted.", "content": as_json(ref("schemas", "RouteDeleted"))},
                          **_COMMON, "404": _NOT_FOUND},
        },
    },
    "/v1/inbound/{inboundId}": {
        "get": {
            "operationId": "getInbound",
            "summary": "One row of the account's inbound log: a message at one route.",
            "security": _BEARER,
            "parameters": [{"name": "inboundId", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The log row.", "content": as_json(ref("schemas", "InboundRecord"))},
                          **_COMMON, "404": _NOT_FOUND},
        },
    },
}

_ROUTE = {
    "type": "object",
    "required": ["id", "account_id", "account", "match", "url", "format", "priority", "oversize_text", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "account_id": {"type": "integer"},
        "account": {"type": "string"},
        "match": {"type": "string", "description": "`addr@domain`, `*@domain` or `/regular expression/`."},
        "url": {"type": "string"},
        "format": {"enum": ["json", "raw"]},
        "priority": {"type": "integer", "description": "Lower is tried first."},
        "oversize_text": {"type": ["string", "null"]},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
    },
    "additionalProperties": False,
}

SCHEMAS: dict[str, Any] = {
    "Route": _ROUTE,
    "RouteList": {"type": "object", "required": ["ok", "routes"], "additionalProperties": False,
                  "properties": {"ok": {"const": True},
                                 "routes": {"type": "array", "items": ref("schemas", "Route")}}},
    "RouteCreated": {"type": "object", "required": ["ok", "route"], "additionalProperties": False,
                     "properties": {"ok": {"const": True}, "route": ref("schemas", "Route")}},
    "RouteDeleted": {"type": "object", "required": ["ok", "id"], "additionalProperties": False,
                     "properties": {"ok": {"const": True}, "id": {"type": "string"}}},
    "RouteRequest": {
        "type": "object", "required": ["match", "url"], "additionalProperties": False,
        "properties": {
            "match": {"type": "string", "minLength": 1, "maxLength": 500},
            "url": {"type": "string", "minLength": 1, "maxLength": 2000},
            "format": {"enum": ["json", "raw", None], "default": "json"},
            "priority": {"type": "integer", "minimum": -1000000, "maximum": 1000000, "default": 0},
            "oversize_text": {"type": ["string", "null"], "minLength": 1, "maxLength": 400,
                              "pattern": "^[ -~]+$"},
        },
    },
    "InboundRecord": {
        "type": "object", "additionalProperties": False,
        "required": ["ok", "id", "channel", "account_id", "route_id", "url", "recipients", "sender", "remote_ip",
                     "size", "http_status", "response_text", "smtp_reply", "outcome", "duration_ms", "webhook_id",
                     "created_at"],
        "properties": {
            "ok": {"const": True},
            "id": {"type": "string", "format": "uuid"},
            "channel": {"const": "inbound"},
            "account_id": {"type": "integer"},
            "route_id": {"type": "string"},
            "url": {"type": "string"},
            "recipients": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "sender": {"type": "string", "description": "The envelope sender (empty for a bounce)."},
            "remote_ip": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "http_status": {"type": "integer", "description": "The app's final status; 0 when it gave none."},
            "response_text": {"type": "string"},
            "smtp_reply": {"type": "string"},
            "outcome": {"enum": ["delivered", "refused", "deferred", "oversize", "invalid"]},
            "duration_ms": {"type": "integer", "minimum": 0},
            "webhook_id": {"type": ["string", "null"]},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
}
