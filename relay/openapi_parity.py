"""The OpenAPI fragments of issue 18 (attachments, tags, metadata, send_at, unsubscribe_url, batch,
cancel, the Resend-compatible routes), merged into relay/openapi.py's document by extend()."""

from __future__ import annotations

import copy
from typing import Any

from relay.attachments import MAX_ATTACHMENTS
from relay.openapi_parts import BEARER, RETRY_AFTER, as_json, failure, ref
from relay.parity import MAX_BATCH, MAX_BATCH_KEY
from relay.tags import MAX_METADATA_BYTES, MAX_TAGS


def _resend_error(description: str, *names: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = {**ref("schemas", "ResendError"), "properties": {"name": {"enum": list(names)}}}
    return {"description": description, "content": as_json(schema)} | ({"headers": headers} if headers else {})


_TAG_PART = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"}
_KEY_FAILURES = {
    "401": failure("No bearer token, or an unknown one.", "KEY_MISSING", "KEY_INVALID"),
    "403": failure("The key is disabled.", "KEY_DISABLED"),
}
_THROTTLED = "Too many failed key checks from this address (the shared AUTH throttle)"
_MESSAGE_ID = {"name": "messageId", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "A messageId from /v1/send."}
_EMAIL_ID = {"name": "emailId", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "An id from POST /emails."}
_RESEND_KEY = {
    "401": _resend_error("No bearer token.", "missing_api_key"),
    "403": _resend_error("An unknown or disabled key.", "invalid_api_key"),
    "429": _resend_error(f"{_THROTTLED}.", "rate_limit_exceeded", headers=RETRY_AFTER),
}

SEND_FIELDS: dict[str, Any] = {
    "attachments": {
        "type": ["array", "null"], "maxItems": MAX_ATTACHMENTS,
        "description": "Files; the size limit counts their decoded bytes with html and text. A content_id "
                       "makes a file inline (beside html: multipart/related, for `cid:` references).",
        "items": {
            "type": "object", "required": ["filename", "content"], "additionalProperties": False,
            "properties": {
                "filename": {"type": "string", "minLength": 1,
                             "description": "Path components are dropped; non-ASCII is sent with RFC 2231."},
                "content": {"type": "string", "contentEncoding": "base64"},
                "content_type": {"type": ["string", "null"], "description": "Guessed from the filename "
                                 "when absent."},
                "content_id": {"type": ["string", "null"]},
                "disposition": {"enum": ["attachment", "inline", None]},
            },
        },
    },
    "tags": {
        "type": ["array", "null"], "maxItems": MAX_TAGS,
        "items": {"type": "object", "required": ["name", "value"], "additionalProperties": False,
                  "properties": {"name": _TAG_PART, "value": _TAG_PART}},
    },
    "metadata": {"type": ["object", "null"],
                 "description": f"Any JSON object of at most {MAX_METADATA_BYTES} bytes, kept with the message."},
    "send_at": {"type": ["string", "null"], "format": "date-time",
                "description": "RFC 3339 with an offset, at most 72 hours ahead: charged now, answered 202 "
                               "`scheduled`, delivered then. A time already past sends now."},
    "unsubscribe_url": {"type": ["string", "null"], "pattern": "^https://[!-=?-~]{1,800}$",
                        "description": "Adds List-Unsubscribe and List-Unsubscribe-Post: "
                                       "List-Unsubscribe=One-Click (RFC 8058)."},
}

BATCH_RESULT: dict[str, Any] = {
    "type": "object", "required": ["ok", "results"], "additionalProperties": False,
    "properties": {
        "ok": {"type": "boolean", "description": "true when every message was accepted."},
        "results": {"type": "array", "items": {
            "description": "The body a single send would have answered, with its index and HTTP status.",
            "type": "object", "required": ["index", "statusCode", "ok"],
            "properties": {"index": {"type": "integer", "minimum": 0},
                           "statusCode": {"type": "integer"}, "ok": {"type": "boolean"},
                           "messageId": {"type": "string", "format": "uuid"},
                           "status": {"enum": ["sent", "queued", "scheduled", "suppressed"]},
                           "suppressed": {"type": "array", "items": {"type": "string"},
                                          "description": "Recipients skipped: on the suppression list."},
                           "error": {"type": "string"}, "code": {"type": "string"}},
            "additionalProperties": False,
        }},
    },
}

PATHS: dict[str, Any] = {
    "/v1/send/batch": {
        "post": {
            "operationId": "sendBatch",
            "summary": f"Up to {MAX_BATCH} messages in one call, each checked and charged on its own.",
            "description": "The body is a JSON array of send requests. One call against the rate limit; "
                           "with an Idempotency-Key (at most 250 characters) the batch as a whole is "
                           "replayed, or refused with 409 when another batch used the key.",
            "security": BEARER,
            "parameters": [{**ref("parameters", "IdempotencyKey")}],
            "requestBody": {"required": True, "content": as_json(
                {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": ref("schemas", "SendRequest")})},
            "responses": {
                "200": {"description": "Every message accepted.", "content": as_json(ref("schemas", "BatchResult"))},
                "207": {"description": "Some messages refused or failed; each result says which.",
                        "content": as_json(ref("schemas", "BatchResult"))},
                "400": failure("Not a JSON array of 1-100 items, or an unusable Idempotency-Key. Nothing "
                                "sent.", "INVALID"),
                **_KEY_FAILURES,
                "409": failure("The Idempotency-Key was used by another batch, or that batch is still "
                                "running.", "IDEMPOTENCY_MISMATCH", "IDEMPOTENCY_IN_FLIGHT",
                                headers={"Retry-After": {"description": "With IDEMPOTENCY_IN_FLIGHT.",
                                                         "schema": {"type": "integer", "minimum": 1}}}),
                "413": failure("The request body is over the limit of /v1/send.", "TOO_LARGE"),
                "429": failure(f"The key's rate limit, or: {_THROTTLED}.", "RATE_LIMITED", headers=RETRY_AFTER),
                "503": failure("A transient failure inside relay; nothing charged.", "TEMPORARY",
                                headers=RETRY_AFTER),
            },
        },
    },
    "/emails": {
        "post": {
            "operationId": "resendSend",
            "summary": "Resend-compatible send (docs/api.md lists the fields relay takes).",
            "security": BEARER,
            "parameters": [ref("parameters", "IdempotencyKey")],
            "requestBody": {"required": True, "content": as_json({"type": "object"})},
            "responses": {
                "200": {"description": "Accepted (sent, queued or scheduled).",
                        "content": as_json(ref("schemas", "ResendId"))},
                **_RESEND_KEY,
                "409": _resend_error("Idempotency-Key conflicts.", "invalid_idempotent_request",
                                     "concurrent_idempotent_requests"),
                "422": _resend_error("Invalid or unsupported fields.", "validation_error", "missing_required_field"),
                "429": _resend_error("The key's rate limit or the shared AUTH throttle (with Retry-After), "
                                     "or credits exhausted (monthly_quota_exceeded).", "rate_limit_exceeded",
                                     "monthly_quota_exceeded",
                                     headers={"Retry-After": {"description": "With rate_limit_exceeded.",
                                                              "schema": {"type": "integer", "minimum": 1}}}),
                "500": _resend_error("The upstream refused or is unavailable (refunded), or a transient "
                                     "failure.", "application_error"),
            },
        },
    },
    "/emails/batch": {
        "post": {
            "operationId": "resendBatch",
            "summary": "Resend-compatible batch: strict by default; `x-batch-validation: permissive` sends "
                       "the valid ones and lists the others in `errors`.",
            "security": BEARER,
            "requestBody": {"required": True, "content": as_json({"type": "array", "maxItems": MAX_BATCH})},
            "responses": {
                "200": {"description": "The ids of the accepted emails, and the refused ones.",
                        "content": as_json(ref("schemas", "ResendBatch"))},
                **_RESEND_KEY,
                "422": _resend_error("An invalid email (strict), or not an array.", "validation_error",
                                     "missing_required_field"),
            },
        },
    },
    "/emails/{emailId}": {
        "get": {
            "operationId": "resendGet",
            "summary": "Resend's email object, from relay's log row.",
            "security": BEARER,
            "parameters": [_EMAIL_ID],
            "responses": {
                "200": {"description": "The email.", "content": as_json(ref("schemas", "ResendEmail"))},
                **_RESEND_KEY,
                "404": _resend_error("No such email of this account.", "not_found"),
            },
        },
    },
    "/emails/{emailId}/cancel": {
        "post": {
            "operationId": "resendCancel",
            "summary": "Cancel a scheduled email; refunded.",
            "security": BEARER,
            "parameters": [_EMAIL_ID],
            "responses": {
                "200": {"description": "Cancelled.", "content": as_json(ref("schemas", "ResendObject"))},
                **_RESEND_KEY,
                "404": _resend_error("No such email of this account.", "not_found"),
                "422": _resend_error("The email is not scheduled (any more).", "validation_error"),
            },
        },
    },
}

CANCEL: dict[str, Any] = {
    "operationId": "cancelMessage",
    "summary": "Cancel a scheduled message before its time; the credits come back.",
    "security": BEARER,
    "parameters": [_MESSAGE_ID],
    "responses": {
        "200": {"description": "Cancelled and refunded.", "content": as_json(ref("schemas", "Cancelled"))},
        **_KEY_FAILURES,
        "404": ref("responses", "NotFound"),
        "409": failure("The message is not scheduled (sent, failed, already cancelled).", "NOT_CANCELLABLE"),
        "429": failure(f"{_THROTTLED}.", "RATE_LIMITED", headers=RETRY_AFTER),
    },
}

SCHEMAS: dict[str, Any] = {
    "BatchResult": BATCH_RESULT,
    "Cancelled": {"type": "object", "required": ["ok", "messageId", "status"], "additionalProperties": False,
                  "properties": {"ok": {"const": True}, "messageId": {"type": "string", "format": "uuid"},
                                 "status": {"const": "cancelled"}}},
    "ResendError": {"type": "object", "required": ["statusCode", "name", "message"], "additionalProperties": False,
                    "properties": {"statusCode": {"type": "integer"}, "name": {"type": "string"},
                                   "message": {"type": "string"}}},
    "ResendId": {"type": "object", "required": ["id"], "additionalProperties": False,
                 "properties": {"id": {"type": "string", "format": "uuid"}}},
    "ResendObject": {"type": "object", "required": ["object", "id"], "additionalProperties": False,
                     "properties": {"object": {"const": "email"}, "id": {"type": "string", "format": "uuid"}}},
    "ResendBatch": {"type": "object", "required": ["data"], "additionalProperties": False, "properties": {
        "data": {"type": "array", "items": ref("schemas", "ResendId")},
        "errors": {"type": "array", "items": {"type": "object", "required": ["index", "message"],
                                              "properties": {"index": {"type": "integer"},
                                                             "message": {"type": "string"}}}}}},
    "ResendEmail": {"type": "object", "required": ["object", "id", "from", "created_at", "last_event"],
                    "properties": {"object": {"const": "email"}, "id": {"type": "string", "format": "uuid"},
                                   "from": {"type": "string"}, "created_at": {"type": "string"},
                                   "last_event": {"type": "string"},
                                   "scheduled_at": {"type": ["string", "null"]},
                                   "tags": {"type": "array"}}},
}

MESSAGE_FIELDS: dict[str, Any] = {
    "tags": {"type": "array", "items": {"type": "object", "properties": {"name": _TAG_PART, "value": _TAG_PART}}},
    "metadata": {"type": ["object", "null"]},
    "scheduledAt": {"type": ["string", "null"], "format": "date-time"},
}


def extend(document: dict[str, Any]) -> None:
    """Add issue 18's fields, statuses, routes and schemas to the document (in place)."""
    schemas = document["components"]["schemas"]
    schemas["SendRequest"]["properties"].update(copy.deepcopy(SEND_FIELDS))
    schemas["Accepted"]["properties"]["status"]["enum"].append("scheduled")
    schemas["Failure"]["properties"]["code"]["enum"].append("NOT_CANCELLABLE")
    message = schemas["Message"]
    message["properties"].update(copy.deepcopy(MESSAGE_FIELDS))
    message["required"].extend(MESSAGE_FIELDS)
    message["properties"]["status"]["enum"].extend(["scheduled", "cancelled"])
    schemas.update(copy.deepcopy(SCHEMAS))
    send = document["paths"]["/v1/send"]["post"]
    send["responses"]["202"]["description"] += " Or scheduled (send_at): stored, charged, delivered at that time."
    document["paths"]["/v1/messages/{messageId}"]["delete"] = copy.deepcopy(CANCEL)
    document["paths"].update(copy.deepcopy(PATHS))
    key = document["components"]["parameters"]["IdempotencyKey"]
    key["description"] += f" On /v1/send/batch: at most {MAX_BATCH_KEY} characters, for the whole batch."
