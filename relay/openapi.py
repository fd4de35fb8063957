"""The OpenAPI 3.1 document of the HTTPS API (relay/http_api.py), served at GET /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from relay import openapi_parity
from relay.dkim import api as dkim_api
from relay.events import openapi as events_openapi
from relay.inbound import openapi as inbound_openapi
from relay.openapi_parts import BEARER, RETRY_AFTER, as_json, ref


def _envelope(schema: str, *codes: str) -> dict[str, Any]:
    """The failure envelope `schema` narrowed to these codes."""
    return {**ref("schemas", schema), "properties": {"code": {"enum": list(codes)}}}


def _failure(description: str, *codes: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure response whose body carries one of `codes` and no messageId."""
    response = {"description": description, "content": as_json(_envelope("Failure", *codes))}
    return response | ({"headers": headers} if headers else {})


_REPLAYED = {"Idempotent-Replayed": ref("headers", "IdempotentReplayed")}
_NULL = {"type": "null"}
_ADDRESS = {"type": "string", "description": "An address, `addr@domain` or `Display Name <addr@domain>`."}
_ADDRESSES = {"type": "array", "items": _ADDRESS, "maxItems": 100}  # limits.max_recipients (default 100)

# Statuses both authenticated operations share: the key check (pipeline.authenticate).
_KEY_FAILURES = {
    "401": _failure("No bearer token (`KEY_MISSING`: `Missing Authorization bearer token`) or an unknown "
                    "one (`KEY_INVALID`: `Invalid API key`).", "KEY_MISSING", "KEY_INVALID"),
    "403": _failure("The key is disabled.", "KEY_DISABLED"),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "relay HTTPS API",
        "version": "1",
        "description": (
            "Send transactional mail through relay. Every failure, on every route, is the envelope "
            "`{\"ok\": false, \"error\": \"<human text>\", \"code\": \"<CODE>\"}`; an unknown path is "
            "404 `NOT_FOUND` and a known path with another method 405 `METHOD_NOT_ALLOWED` (with "
            "`Allow`), see components.responses."
        ),
    },
    "paths": {
        "/v1/send": {
            "post": {
                "operationId": "send",
                "summary": "Send one message (1-100 recipients, charged per recipient).",
                "description": (
                    "Checked in order: the key and the rate limit (nothing of the body is read before), "
                    "the body size, the JSON, the fields and recipients, html + text size, the sender's "
                    "authorization, the balance; then the debit, the daily cap and the relay upstream."
                ),
                "security": BEARER,
                "parameters": [ref("parameters", "IdempotencyKey")],
                "requestBody": {"required": True, "content": as_json(ref("schemas", "SendRequest"))},
                "responses": {
                    "200": {"description": "Relayed (charged), or every recipient suppressed (`status: "
                                           "suppressed`: nothing sent or charged).", "headers": _REPLAYED,
                            "content": as_json(ref("schemas", "Accepted"))},
                    "202": {"description": "Over the sender's daily cap: stored, charged, delivered within "
                                           "24 hours.", "headers": _REPLAYED,
                            "content": as_json(ref("schemas", "Accepted"))},
                    "400": _failure("The body is not a valid send request, the sender is not authorized, or "
                                    "the Idempotency-Key is unusable; `error` says which. Nothing charged.",
                                    "INVALID"),
                    **_KEY_FAILURES,
                    "402": _failure("The balance does not cover the recipients (`INSUFFICIENT_CREDITS`), or a "
                                    "concurrent send used it first (`INSUFFICIENT_FUNDS`). Nothing debited.",
                                    "INSUFFICIENT_CREDITS", "INSUFFICIENT_FUNDS"),
                    "409": _failure(
                        "The Idempotency-Key was used for a different message (`IDEMPOTENCY_MISMATCH`), or "
                        "its first request is still running (`IDEMPOTENCY_IN_FLIGHT`, with Retry-After).",
                        "IDEMPOTENCY_MISMATCH", "IDEMPOTENCY_IN_FLIGHT",
                        headers={"Retry-After": {"description": "With `IDEMPOTENCY_IN_FLIGHT`: seconds to "
                                                                "wait before retrying.",
                                                 "schema": {"type": "integer", "minimum": 1}}}),
                    "413": _failure("The request body, or html + text in UTF-8 bytes, is over the size limit "
                                    "(`Body must be under 10MB`); decided from Content-Length or while "
                                    "streaming.", "TOO_LARGE"),
                    "429": _failure("The key's rate limit (calls per rolling minute).", "RATE_LIMITED",
                                    headers=RETRY_AFTER),
                    "502": {"description": "The upstream refused the message permanently; refunded, logged "
                                           "as failed.", "headers": _REPLAYED,
                            "content": as_json(_envelope("LoggedFailure", "RELAY_FAILED"))},
                    "503": {
                        "description": "The upstream is unavailable (`UPSTREAM_UNAVAILABLE`: refunded, logged, "
                                       "with its messageId) or a transient failure inside relay "
                                       "(`TEMPORARY`: nothing charged).",
                        "headers": RETRY_AFTER,
                        "content": as_json({"oneOf": [_envelope("LoggedFailure", "UPSTREAM_UNAVAILABLE"),
                                                    _envelope("Failure", "TEMPORARY")]}),
                    },
                },
            },
        },
        "/v1/messages/{messageId}": {
            "get": {
                "operationId": "getMessage",
                "summary": "The log row of one of the key's account's messages.",
                "security": BEARER,
                "parameters": [{"name": "messageId", "in": "path", "required": True,
                                "description": "A messageId from /v1/send.", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The log row.", "content": as_json(ref("schemas", "Message"))},
                    **_KEY_FAILURES,
                    "404": ref("responses", "NotFound"),
                    "503": _failure("The database is unreachable.", "TEMPORARY", headers=RETRY_AFTER),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: the process answers.",
                "responses": {"200": {"description": "Alive.", "content": as_json(ref("schemas", "Ok"))}},
            },
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: the database answers.",
                "responses": {
                    "200": {"description": "Ready.", "content": as_json(ref("schemas", "Ok"))},
                    "503": _failure("The database is not reachable.", "TEMPORARY", headers=RETRY_AFTER),
                },
            },
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "responses": {"200": {"description": "The Prometheus text exposition format.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            },
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {"200": {"description": "The OpenAPI document.", "content": as_json(
                    {"type": "object", "required": ["openapi", "info", "paths"],
                     "properties": {"openapi": {"const": "3.1.0"}}})}},
            },
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key, `rk_<id>_<secret>`."},
        },
        "parameters": {
            "IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "Makes a retry safe for 24 hours: the same request again gets the first answer "
                               "(with `Idempotent-Replayed: true`), another request under the key 409.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
            },
        },
        "headers": {
            "RetryAfter": {"description": "Seconds to wait before retrying.", "required": True,
                           "schema": {"type": "integer", "minimum": 1}},
            "IdempotentReplayed": {"description": "Present when this is the replayed answer to an earlier "
                                                  "request with the same Idempotency-Key.",
                                   "schema": {"const": "true"}},
        },
        "responses": {
            "NotFound": {"description": "No such route, or (GET /v1/messages) no such message of this "
                                        "account, or not a UUID.",
                         "content": as_json(_envelope("Failure", "NOT_FOUND"))},
            "MethodNotAllowed": {"description": "The path exists, the method does not.",
                                 "headers": {"Allow": {"description": "The methods the path takes.",
                                                       "required": True, "schema": {"type": "string"}}},
                                 "content": as_json(_envelope("Failure", "METHOD_NOT_ALLOWED"))},
        },
        "schemas": {
            "SendRequest": {
                "type": "object",
                "description": "A null optional field is the same as an absent one. `to` + `cc` + `bcc` hold "
                               "1-100 distinct addresses (limits.max_recipients); `from` must be authorized "
                               "for the account. Header-bound text must not contain CR, LF or other control "
                               "characters.",
                "required": ["from", "to"],
                "properties": {
                    "from": _ADDRESS,
                    "to": {"anyOf": [_ADDRESS, {**_ADDRESSES, "minItems": 1}]},
                    "cc": {"anyOf": [_NULL, _ADDRESS, _ADDRESSES]},
                    "bcc": {"anyOf": [_NULL, _ADDRESS, _ADDRESSES]},
                    "reply_to": {"anyOf": [_NULL, _ADDRESS, _ADDRESSES]},
                    "subject": {"type": ["string", "null"]},
                    "html": {"type": ["string", "null"]},
                    "text": {"type": ["string", "null"]},
                    "headers": {
                        "type": ["object", "null"],
                        "description": "Extra header fields. Not allowed: From, To, Cc, Bcc, Reply-To, "
                                       "Subject, Date, Orig-Date, Message-ID, Sender, MIME-Version, "
                                       "Return-Path, Received, Idempotency-Key, Content-*, Resent-*.",
                        "maxProperties": 50,
                        "propertyNames": {"pattern": "^[!-9;-~]+$", "maxLength": 76},
                        "additionalProperties": {"type": "string", "maxLength": 900},
                    },
                },
                "additionalProperties": False,
                # a body: html, text or both, not empty
                "anyOf": [{"required": [part], "properties": {part: {"type": "string", "minLength": 1}}}
                          for part in ("html", "text")],
            },
            "Accepted": {
                "type": "object",
                "required": ["ok", "messageId", "status"],
                "properties": {"ok": {"const": True}, "messageId": {"type": "string", "format": "uuid"},
                               "status": {"enum": ["sent", "queued", "suppressed"]},
                               "suppressed": {"type": "array", "items": {"type": "string"},
                                              "description": "Recipients skipped: on the suppression list, "
                                                             "not charged (docs/events.md)."}},
                "additionalProperties": False,
            },
            "Failure": {
                "type": "object",
                "required": ["ok", "error", "code"],
                "properties": {
                    "ok": {"const": False},
                    "error": {"type": "string", "minLength": 1},
                    "code": {"enum": ["INVALID", "KEY_MISSING", "KEY_INVALID", "KEY_DISABLED", "RATE_LIMITED",
                                      "TOO_LARGE", "INSUFFICIENT_CREDITS", "INSUFFICIENT_FUNDS",
                                      "IDEMPOTENCY_MISMATCH", "IDEMPOTENCY_IN_FLIGHT", "RELAY_FAILED",
                                      "UPSTREAM_UNAVAILABLE", "TEMPORARY", "NOT_FOUND", "METHOD_NOT_ALLOWED"]},
                },
                "additionalProperties": False,
            },
            "LoggedFailure": {
                "description": "A failure after the debit: refunded, with the messageId of its log row.",
                "type": "object",
                "required": ["ok", "error", "code", "messageId"],
                "properties": {"ok": {"const": False}, "error": {"type": "string", "minLength": 1},
                               "code": {"enum": ["RELAY_FAILED", "UPSTREAM_UNAVAILABLE"]},
                               "messageId": {"type": "string", "format": "uuid"}},
                "additionalProperties": False,
            },
            "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}},
                   "additionalProperties": False},
            "Message": {
                "type": "object",
                "required": ["ok", "messageId", "channel", "status", "keyId", "sender", "recipientCount",
                             "sizeBytes", "creditsCharged", "creditsRefunded", "failureCode", "upstreamReply",
                             "deliverAfter", "createdAt", "updatedAt", "finishedAt"],
                "properties": {
                    "ok": {"const": True},
                    "messageId": {"type": "string", "format": "uuid"},
                    "channel": {"enum": ["api", "smtp"]},
                    "status": {"enum": ["sending", "sent", "queued", "failed", "suppressed"],
                               "description": "`sending` while the upstream has not answered yet; "
                                              "`suppressed` when every recipient was on the suppression list."},
                    "keyId": {"type": "string"},
                    "sender": {"type": "string"},
                    "recipientCount": {"type": "integer", "minimum": 1},
                    "sizeBytes": {"type": "integer", "minimum": 0},
                    "creditsCharged": {"type": "integer", "minimum": 0},
                    "creditsRefunded": {"type": "integer", "minimum": 0},
                    "failureCode": {"type": ["integer", "null"], "description": "docs/contract.md's failure codes."},
                    "upstreamReply": {"type": ["string", "null"]},
                    "deliverAfter": {"type": ["string", "null"], "format": "date-time"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "updatedAt": {"type": "string", "format": "date-time"},
                    "finishedAt": {"type": ["string", "null"], "format": "date-time"},
                    "subject": {"type": ["string", "null"]},
                    "recipients": {"type": "array", "items": ref("schemas", "Recipient")},
                    "events": {"type": "array", "items": ref("schemas", "Event")},
                },
                "additionalProperties": False,
            },
        },
    },
}


# Features' paths and schemas, merged in once here.
DOCUMENT["paths"].update(events_openapi.PATHS)
DOCUMENT["components"]["schemas"].update(events_openapi.SCHEMAS)
DOCUMENT["paths"].update(inbound_openapi.PATHS)
DOCUMENT["components"]["schemas"].update(inbound_openapi.SCHEMAS)
DOCUMENT["paths"].update(dkim_api.PATHS)
DOCUMENT["components"]["schemas"].update(dkim_api.SCHEMAS)
DOCUMENT["components"]["schemas"]["Failure"]["properties"]["code"]["enum"].extend(dkim_api.CODES)

openapi_parity.extend(DOCUMENT)  # issue 18: attachments, tags, batch, scheduling, Resend routes
