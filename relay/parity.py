"""API parity routes (issue 18): POST /v1/send/batch and DELETE /v1/messages/{id}, and the log row's
tags, metadata and schedule as the API shows them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay import compose
from relay.outcomes import Outcome, Result, reject
from relay.store.schedule import CANCELLED_REPLY

if TYPE_CHECKING:
    from relay.channels.http import Api
    from relay.pipeline import Message, Opened, Transaction

log = logging.getLogger(__name__)

MAX_BATCH = 100
# a batch's per-message keys are '<key>#<index>': the caller's key leaves room for the suffix
MAX_BATCH_KEY = 250
_REFUSES_BATCH = (Outcome.IDEMPOTENCY_MISMATCH, Outcome.IDEMPOTENCY_IN_FLIGHT)


def public_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The parity fields of a log row for GET /v1/messages/{id}; a scheduled or cancelled message
    says so in its status."""
    fields: dict[str, Any] = {
        "tags": [{"name": n, "value": v} for n, v in json.loads(row["tags"]).items()] if row.get("tags") else [],
        "metadata": json.loads(row["metadata"]) if row.get("metadata") else None,
        "scheduledAt": row["scheduled_at"].isoformat() if row.get("scheduled_at") else None,
    }
    if row["status"] == "queued" and row.get("scheduled_at"):
        fields["status"] = "scheduled"
    elif row["status"] == "failed" and row.get("scheduled_at") and row["upstream_reply"] == CANCELLED_REPLY:
        fields["status"] = "cancelled"
    return fields


def reply_body(api: Api, result: Result) -> tuple[int, dict[str, Any]]:
    """A single send's status and body for a result (one entry of a batch), counted."""
    status, body, _ = api.parts(api.count(result))
    return status, body


def batch_fingerprint(doc: list[Any]) -> bytes:
    """SHA-256 of the batch as sent, so that a retry under the same key is known for the same batch."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass
class Prepared:
    """A batch after steps 3-4: each message's refusal (None: it goes on), and the ones that go on."""

    results: list[Result | None]
    ready: list[tuple[int, Transaction, Message]]
    key: str | None


async def prepare_batch(api: Api, opened: Opened, doc: object, request: Request,
                        key: str | None) -> Prepared | Result:
    """Check and compose each message of a batch; a Result when the batch is refused as a whole.
    With an Idempotency-Key, message i carries '<key>#<i>' and the fingerprint of the whole batch."""
    if not isinstance(doc, list) or not doc:
        return reject(Outcome.INVALID, "a batch is a JSON array of 1-100 send requests")
    if len(doc) > MAX_BATCH:
        return reject(Outcome.INVALID, f"a batch holds at most {MAX_BATCH} messages")
    if key is not None and not (1 <= len(key) <= MAX_BATCH_KEY and key.isascii() and key.isprintable()):
        return reject(Outcome.INVALID,
                      f"Idempotency-Key of a batch must be 1-{MAX_BATCH_KEY} printable ASCII characters")
    fingerprint = await api.cpu(compose.doc_size(doc), batch_fingerprint, doc) if key is not None else None
    prepared = Prepared([None] * len(doc), [], key)
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            prepared.results[i] = reject(Outcome.INVALID, f"batch[{i}] must be a JSON object")
            continue
        one = await api.prepare(opened, item, request, None if key is None else f"{key}#{i}", fingerprint)
        if isinstance(one, Result):
            prepared.results[i] = reject(one.outcome, f"batch[{i}]: {one.reason}", retry_after=one.retry_after)
        else:
            prepared.ready.append((i, *one))
    return prepared


async def submit_batch(api: Api, prepared: Prepared) -> list[Result] | Result:
    """Each prepared message through the pipeline on its own, concurrently, so that their admits
    share round trips through the store's batcher; a Result when the batch's key refuses it whole."""
    results, ready = list(prepared.results), list(prepared.ready)
    if prepared.key is not None and ready:
        # the first admitted message claims the batch's key: a different batch under it, or the
        # same one still running, is refused whole before anything else is charged
        i, txn, message = ready.pop(0)
        first = await api.pipeline.submit_detached(txn, message, api.count)
        if first.outcome in _REFUSES_BATCH:
            return first
        results[i] = first
    done = await asyncio.gather(*(api.pipeline.submit_detached(txn, message, api.count) for _, txn, message in ready))
    for (i, _, _), result in zip(ready, done, strict=True):
        results[i] = result
    return [r for r in results if r is not None]


@dataclass(frozen=True, slots=True)
class Refused:
    """A request refused before its messages were looked at; unread: the body was not read."""

    result: Result
    unread: bool


async def read_batch(api: Api, request: Request,
                     held: contextlib.AsyncExitStack) -> tuple[Opened, object] | Refused:
    """Steps 1-2, then the body read and decoded as JSON: the opened call and the document (held:
    the request's exit stack, see Api.read_body)."""
    opened = await api.open(request)
    if isinstance(opened, Result):
        return Refused(opened, unread=True)
    body = await api.read_body(request, held)
    if body is None:
        return Refused(reject(Outcome.TOO_LARGE, "the request body is over the size limit"), unread=True)
    try:  # up to body_limit (tens of MB): decoded in a worker thread when big, as /v1/send does
        return opened, await api.cpu(len(body), compose.decode_json, body)
    except compose.RequestError as exc:
        return Refused(reject(Outcome.INVALID, str(exc)), unread=False)


def routes(api: Api) -> list[Route]:
    """The parity routes over the API's pipeline."""

    async def send_batch(request: Request) -> Response:
        """POST /v1/send/batch: up to 100 messages, one result each; 200 all accepted, else 207."""
        async with contextlib.AsyncExitStack() as held:
            read = await read_batch(api, request, held)
            if isinstance(read, Refused):
                response = api.answer(read.result)
                return api.unread(response) if read.unread else response
            opened, doc = read
            del read
            prepared = await prepare_batch(api, opened, doc, request, request.headers.get("idempotency-key"))
            del doc
            results = prepared if isinstance(prepared, Result) else await submit_batch(api, prepared)
        if isinstance(results, Result):
            return api.answer(results)
        entries = []
        for i, result in enumerate(results):
            status, entry = reply_body(api, result)
            entries.append({"index": i, "statusCode": status, **entry})
        accepted = all(r.outcome.accepted for r in results)
        headers = {"Idempotent-Replayed": "true"} if results and all(r.replayed for r in results) else None
        return JSONResponse({"ok": accepted, "results": entries}, status_code=200 if accepted else 207,
                            headers=headers)

    return [
        Route("/v1/send/batch", send_batch, methods=["POST"]),
    ]


async def cancel(api: Api, request: Request) -> Response:
    """DELETE /v1/messages/{id}: cancel a scheduled message before its time; refunded."""
    principal = await api.principal(request)
    if isinstance(principal, Response):
        return principal
    try:
        message_id = uuid.UUID(request.path_params["message_id"])
    except ValueError:
        return api.failure(404, "no such message", "NOT_FOUND")
    if await api.store.cancel_scheduled(message_id, principal.account_id):
        return JSONResponse({"ok": True, "messageId": str(message_id), "status": "cancelled"})
    row = await api.store.message(message_id)
    if row is None or row["account_id"] != principal.account_id:
        return api.failure(404, "no such message", "NOT_FOUND")
    shown = public_fields(row).get("status", row["status"])
    return api.failure(409, f"only a scheduled message can be cancelled; this one is {shown}", "NOT_CANCELLABLE")

