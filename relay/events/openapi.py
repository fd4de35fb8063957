"""OpenAPI fragments of events, webhooks and the suppression list (merged by relay/openapi.py)."""

from __future__ import annotations

from typing import Any

from relay.events.payload import EVENT_TYPES
from relay.openapi_parts import BEARER, as_json, ref

_BEARER = BEARER
_FAILURE = {"content": as_json(ref("schemas", "Failure"))}
_COMMON = {
    "401": {"description": "No bearer token or an unknown one.", **_FAILURE},
    "403": {"description": "The key is disabled.", **_FAILURE},
    "503": {"description": "The database is unreachable.", **_FAILURE},
}


def _list_of(name: str, field: str) -> dict[str, Any]:
    return {"type": "object", "required": ["ok", field],
            "properties": {"ok": {"const": True}, field: {"type": "array", "items": ref("schemas", name)}},
            "additionalProperties": False}


def _one(name: str, field: str) -> dict[str, Any]:
    return {"type": "object", "required": ["ok", field],
            "properties": {"ok": {"const": True}, field: ref("schemas", name)}, "additionalProperties": False}


_ENDPOINT_ID = [{"name": "endpointId", "in": "path", "required": True, "schema": {"type": "string"}}]
_ADDRESS = [{"name": "address", "in": "path", "required": True, "schema": {"type": "string"}}]
_NOT_FOUND = {"404": {"description": "No such item in the key's account.", **_FAILURE}}
_INVALID = {"400": {"description": "The body is not valid; `error` says why.", **_FAILURE}}
_TOO_LARGE = {"413": {"description": "The body is over 16 KB (refused before it is read past that).", **_FAILURE}}

PATHS: dict[str, Any] = {
    "/v1/webhooks": {
        "get": {"operationId": "listWebhooks", "summary": "The account's webhook endpoints (no secrets).",
                "security": _BEARER,
                "responses": {"200": {"description": "Endpoints.",
                                      "content": as_json(_list_of("WebhookEndpoint", "webhooks"))}, **_COMMON}},
        "post": {"operationId": "addWebhook",
                 "summary": "Register an endpoint; its whsec_ secret is in this answer only.",
                 "security": _BEARER,
                 "requestBody": {"required": True, "content": as_json(ref("schemas", "WebhookRequest"))},
                 "responses": {"201": {"description": "Created, with `secret`.",
                                       "content": as_json(_one("WebhookEndpoint", "webhook"))},
                               **_INVALID, **_TOO_LARGE, **_COMMON}},
    },
    "/v1/webhooks/{endpointId}": {
        "delete": {"operationId": "removeWebhook", "summary": "Remove an endpoint.", "security": _BEARER,
                   "parameters": _ENDPOINT_ID,
                   "responses": {"200": {"description": "Removed.", "content": as_json(ref("schemas", "Ok"))},
                                 **_NOT_FOUND, **_COMMON}},
    },
    "/v1/webhooks/{endpointId}/rotate-secret": {
        "post": {"operationId": "rotateWebhookSecret",
                 "summary": "A new secret (shown once); the previous one still signs for "
                            "webhooks.rotation_overlap_hours.",
                 "security": _BEARER, "parameters": _ENDPOINT_ID,
                 "responses": {"200": {"description": "Rotated, with `secret`.",
                                       "content": as_json(_one("WebhookEndpoint", "webhook"))},
                               **_NOT_FOUND, **_COMMON}},
    },
    "/v1/suppressions": {
        "get": {"operationId": "listSuppressions", "summary": "The account's suppression list.",
                "security": _BEARER,
                "responses": {"200": {"description": "Suppressed addresses.",
                                      "content": as_json(_list_of("Suppression", "suppressions"))}, **_COMMON}},
        "post": {"operationId": "addSuppression", "summary": "Suppress an address (reason `manual`).",
                 "security": _BEARER,
                 "requestBody": {"required": True, "content": as_json({
                     "type": "object", "required": ["address"],
                     "properties": {"address": {"type": "string"}}, "additionalProperties": False})},
                 "responses": {"201": {"description": "Suppressed.",
                                       "content": as_json(_one("Suppression", "suppression"))},
                               **_INVALID, **_TOO_LARGE, **_COMMON}},
    },
    "/v1/suppressions/{address}": {
        "delete": {"operationId": "removeSuppression", "summary": "Mail an address again.", "security": _BEARER,
                   "parameters": _ADDRESS,
                   "responses": {"200": {"description": "Removed.", "content": as_json(ref("schemas", "Ok"))},
                                 **_NOT_FOUND, **_COMMON}},
    },
}

SCHEMAS: dict[str, Any] = {
    "Recipient": {"type": "object", "required": ["address", "status"],
                  "properties": {"address": {"type": "string"},
                                 "status": {"enum": ["sending", "queued", "sent", "failed", "suppressed",
                                                     "bounced", "complained"]}},
                  "additionalProperties": False},
    "Event": {"type": "object", "required": ["id", "type", "timestamp", "messageId", "recipient", "data"],
              "properties": {"id": {"type": "string"}, "type": {"enum": list(EVENT_TYPES)},
                             "timestamp": {"type": "string", "format": "date-time"},
                             "messageId": {"type": ["string", "null"]}, "recipient": {"type": ["string", "null"]},
                             "data": {"type": "object"}},
              "additionalProperties": False},
    "WebhookRequest": {"type": "object", "required": ["url"],
                       "properties": {"url": {"type": "string", "format": "uri"},
                                      "events": {"type": "array", "items": {"enum": list(EVENT_TYPES)}}},
                       "additionalProperties": False},
    "WebhookEndpoint": {"type": "object", "required": ["id", "url", "events", "enabled", "createdAt"],
                        "properties": {"id": {"type": "string"}, "url": {"type": "string"},
                                       "events": {"type": ["array", "null"], "items": {"type": "string"}},
                                       "enabled": {"type": "boolean"},
                                       "disabledReason": {"type": ["string", "null"]},
                                       "createdAt": {"type": "string", "format": "date-time"},
                                       "secret": {"type": "string", "pattern": "^whsec_"}},
                        "additionalProperties": False},
    "Suppression": {"type": "object", "required": ["address", "reason", "createdAt"],
                    "properties": {"address": {"type": "string"},
                                   "reason": {"enum": ["hard_bounce", "complaint", "manual"]},
                                   "messageId": {"type": ["string", "null"]},
                                   "createdAt": {"type": "string", "format": "date-time"},
                                   "expiresAt": {"type": ["string", "null"], "format": "date-time"}},
                    "additionalProperties": False},
}
