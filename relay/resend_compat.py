"""Resend-compatible endpoints: POST /emails, POST /emails/batch, GET /emails/{id},
POST /emails/{id}/cancel, taking Resend's request bodies and answering in Resend's shapes, so that
an app using Resend's SDKs switches by changing the SDK's base URL and key (docs/api.md)."""

from __future__ import annotations

import base64
import contextlib
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay import parity
from relay.outcomes import Outcome, Result, reject

if TYPE_CHECKING:
    from relay.channels.http import Api

# Resend's fields -> relay's (None: refused as unsupported). Anything else is refused too.
FIELD_MAP: dict[str, str | None] = {
    "from": "from", "to": "to", "cc": "cc", "bcc": "bcc", "reply_to": "reply_to", "replyTo": "reply_to",
    "subject": "subject", "html": "html", "text": "text", "headers": "headers",
    "attachments": "attachments", "tags": "tags", "scheduled_at": "send_at", "scheduledAt": "send_at",
    "template": None, "react": None, "topic_id": None,
}
# The one table: relay outcome -> (HTTP status, Resend error name). Resend's names
# (resend.com/docs/api-reference/errors) as the official SDKs map them to exceptions.
RESEND_ERRORS: dict[Outcome, tuple[int, str]] = {
    Outcome.INVALID: (422, "validation_error"),
    Outcome.TOO_LARGE: (422, "validation_error"),
    Outcome.KEY_MISSING: (401, "missing_api_key"),
    Outcome.KEY_INVALID: (403, "invalid_api_key"),
    Outcome.KEY_DISABLED: (403, "invalid_api_key"),
    Outcome.RATE_LIMITED: (429, "rate_limit_exceeded"),
    Outcome.INSUFFICIENT_CREDITS: (429, "monthly_quota_exceeded"),  # Resend's "out of sending quota"
    Outcome.INSUFFICIENT_FUNDS: (429, "monthly_quota_exceeded"),
    Outcome.IDEMPOTENCY_MISMATCH: (409, "invalid_idempotent_request"),
    Outcome.IDEMPOTENCY_IN_FLIGHT: (409, "concurrent_idempotent_requests"),
    Outcome.RELAY_FAILED: (500, "application_error"),
    Outcome.UPSTREAM_UNAVAILABLE: (500, "application_error"),
    Outcome.TEMPORARY: (500, "application_error"),
}
_MISSING = re.compile(r"field '\w+' is required")
# relay's status of a message -> Resend's last_event
LAST_EVENT = {"sending": "queued", "queued": "queued", "scheduled": "scheduled", "sent": "sent",
              "failed": "failed", "cancelled": "canceled", "suppressed": "suppressed"}


class ResendFieldError(ValueError):
    """A Resend request field relay does not take."""


def _error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"statusCode": status, "name": name, "message": message}, status_code=status,
                        headers=headers)


def error_reply(api: Api, result: Result) -> JSONResponse:
    """A refused or failed send in Resend's error shape; relay's own wording as the message (not
    counted here: the routes count what they answer)."""
    status, name, message, headers = _error_parts(api, result)
    return _error(status, name, message, headers or None)


def _error_parts(api: Api, result: Result) -> tuple[int, str, str, dict[str, str]]:
    """Resend's status and error name for a result, relay's wording, and the headers to keep."""
    status, name = RESEND_ERRORS[result.outcome]
    if name == "validation_error" and _MISSING.search(result.reason):
        name = "missing_required_field"
    _, body, relay_headers = api.parts(result)
    # Retry-After on 429 only, where Resend sends it (rate limits)
    headers = {k: v for k, v in relay_headers.items() if k.lower() == "retry-after" and status == 429}
    return status, name, str(body.get("error", result.outcome.value)), headers


def refused(api: Api, refused: parity.Refused) -> Response:
    """A request refused before its content was looked at, in Resend's shape."""
    response = error_reply(api, refused.result)
    return api.unread(response) if refused.unread else response


def _attachment(i: int, item: object) -> object:
    """One Resend attachment as relay takes it: a byte list becomes base64, inline_content_id content_id."""
    if not isinstance(item, dict):
        return item
    out = dict(item)
    if "path" in out:
        raise ResendFieldError(f"attachments[{i}]: 'path' (a remote file) is not supported; send 'content'")
    if "inline_content_id" in out:
        out["content_id"] = out.pop("inline_content_id")
    content = out.get("content")
    if isinstance(content, list):
        try:
            out["content"] = base64.b64encode(bytes(content)).decode("ascii")
        except (TypeError, ValueError):
            raise ResendFieldError(f"attachments[{i}]: 'content' must be base64 or a list of bytes 0-255") from None
    return out


def translate(doc: object) -> dict[str, Any]:
    """A Resend send body as a relay /v1/send body; ResendFieldError for what relay does not take."""
    if not isinstance(doc, dict):
        raise ResendFieldError("the body must be a JSON object")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if name not in FIELD_MAP:
            raise ResendFieldError(f"unknown field {name!r}")
        target = FIELD_MAP[name]
        if target is None:
            raise ResendFieldError(f"field {name!r} is not supported by this relay")
        if target in out:
            raise ResendFieldError(f"field {target!r} is given twice")
        if name == "attachments" and isinstance(value, list):
            value = [_attachment(i, item) for i, item in enumerate(value)]
        out[target] = value
    return out


def _translated(doc: object) -> dict[str, Any] | Result:
    try:
        return translate(doc)
    except ResendFieldError as exc:
        return reject(Outcome.INVALID, str(exc))


def routes(api: Api) -> list[Route]:
    """The Resend-compatible routes over the API's pipeline."""

    async def send(request: Request) -> Response:
        """POST /emails: one message; 200 {"id"} once accepted (sent, queued or scheduled)."""
        sent = await _send(request)
        _count(sent)
        if isinstance(sent, parity.Refused):
            return refused(api, sent)
        if not sent.outcome.accepted:
            return error_reply(api, sent)
        return JSONResponse({"id": sent.message_id})

    async def _send(request: Request) -> parity.Refused | Result:
        async with contextlib.AsyncExitStack() as held:
            # the same steps 1-2, body limit and JSON decoding as a batch
            read = await parity.read_batch(api, request, held)
            if isinstance(read, parity.Refused):
                return read
            opened, doc = read
            body = _translated(doc)
            if isinstance(body, Result):
                return body
            prepared = await api.prepare(opened, body, request, request.headers.get("idempotency-key"))
            if isinstance(prepared, Result):
                return prepared
            return await api.pipeline.submit_detached(*prepared, api.count)

    async def send_batch(request: Request) -> Response:
        """POST /emails/batch: strict (Resend's default) refuses the whole batch when one message is
        invalid; 'x-batch-validation: permissive' sends the valid ones and lists the others."""
        strict = request.headers.get("x-batch-validation", "strict").lower() != "permissive"
        sent = await _send_batch(request, strict)
        _count(sent)
        if isinstance(sent, parity.Refused):
            return refused(api, sent)
        if isinstance(sent, Result):
            return error_reply(api, sent)
        data = [{"id": r.message_id} for r in sent if r.outcome.accepted]
        errors = [{"index": i, "message": _error_parts(api, r)[2]}
                  for i, r in enumerate(sent) if not r.outcome.accepted]
        return JSONResponse({"data": data, "errors": errors} if errors or not strict else {"data": data})

    async def _send_batch(request: Request, strict: bool) -> parity.Refused | Result | list[Result]:
        async with contextlib.AsyncExitStack() as held:
            read = await parity.read_batch(api, request, held)
            if isinstance(read, parity.Refused):
                return read
            opened, doc = read
            if not isinstance(doc, list):
                return reject(Outcome.INVALID, "the body must be a JSON array of emails")
            bodies: list[object] = []
            for i, item in enumerate(doc):
                body = _translated(item)
                bodies.append(reject(Outcome.INVALID, f"batch[{i}]: {body.reason}") if isinstance(body, Result)
                              else body)
            untranslatable = [(i, b) for i, b in enumerate(bodies) if isinstance(b, Result)]
            if strict and untranslatable:
                return untranslatable[0][1]
            prepared = await parity.prepare_batch(api, opened, [{} if isinstance(b, Result) else b for b in bodies],
                                                  request, request.headers.get("idempotency-key"))
            if isinstance(prepared, Result):
                return prepared
            for i, b in untranslatable:
                assert isinstance(b, Result)
                prepared.results[i] = b
            bad = [r for r in prepared.results if r is not None]
            if strict and bad:
                return bad[0]  # nothing was charged or sent
            return await parity.submit_batch(api, prepared)

    def _count(sent: parity.Refused | Result | list[Result]) -> None:
        """Count what a send route answers (each message of a batch), where it answers."""
        if isinstance(sent, parity.Refused):
            api.count(sent.result)
        elif isinstance(sent, Result):
            api.count(sent)
        else:
            for result in sent:
                api.count(result)

    async def _owned(request: Request) -> tuple[uuid.UUID, dict[str, Any]] | Response:
        principal = await api.authenticate(request)
        if isinstance(principal, Result):
            return error_reply(api, principal)
        try:
            message_id = uuid.UUID(request.path_params["email_id"])
        except ValueError:
            return _error(404, "not_found", "Email not found")
        row = await api.store.message_with_details(message_id)
        if row is None or row["account_id"] != principal.account_id:
            return _error(404, "not_found", "Email not found")
        return message_id, row

    async def get(request: Request) -> Response:
        """GET /emails/{id}: Resend's email object, from relay's log row."""
        owned = await _owned(request)
        if isinstance(owned, Response):
            return owned
        message_id, row = owned
        fields = parity.public_fields(row)
        status = fields.get("status", row["status"])
        return JSONResponse({
            "object": "email", "id": str(message_id), "from": row["sender"],
            "to": [r["address"] for r in row.get("recipients") or []], "subject": row.get("subject"),
            "html": None, "text": None,
            "cc": None, "bcc": None, "reply_to": None,
            "created_at": row["created_at"].isoformat(), "scheduled_at": fields["scheduledAt"],
            "last_event": LAST_EVENT.get(status, status), "tags": fields["tags"],
        })

    async def cancel(request: Request) -> Response:
        """POST /emails/{id}/cancel: cancel a scheduled email (refunded)."""
        owned = await _owned(request)
        if isinstance(owned, Response):
            return owned
        message_id, row = owned
        if not await api.store.cancel_scheduled(message_id, row["account_id"]):
            return _error(422, "validation_error", "only a scheduled email can be canceled")
        return JSONResponse({"object": "email", "id": str(message_id)})

    return [
        Route("/emails", send, methods=["POST"]),
        Route("/emails/batch", send_batch, methods=["POST"]),
        Route("/emails/{email_id}", get, methods=["GET"]),
        Route("/emails/{email_id}/cancel", cancel, methods=["POST"]),
    ]
