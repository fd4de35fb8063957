"""POST one message to the app of every route that takes some of its recipients, signed, in parallel,
within one deadline; each answer becomes a Verdict through the reply table.

In two steps so that the caller can let go of the message bytes in between: `prepare` builds every
request body (a JSON document per JSON route; the raw routes share a view of the message itself),
`post_all` sends them. When no raw route needs the message, the caller frees it before the POSTs, so
a message in flight is held once (as its JSON body), not twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.inbound import payload, replies
from relay.inbound.routes import Format, Route
from relay.outbound import signing
from relay.outbound.client import HttpClient

MAX_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class Delivery:
    """One route's POST: who it carried, what the app answered, how long it took."""

    route: Route
    recipients: tuple[str, ...]
    verdict: replies.Verdict
    duration: float
    webhook_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """One route's POST, ready to sign and send."""

    route: Route
    recipients: tuple[str, ...]
    body: bytes | memoryview
    headers: dict[str, str]
    webhook_id: str


@dataclass(frozen=True, slots=True)
class Batch:
    """The requests of one message, and whether any of them still reads the message bytes."""

    requests: list[Request]
    uses_message: bool


def webhook_id(route: Route, digest: bytes) -> str:
    """The same id for the same message to the same route, so an app can drop the copy a sending
    server delivers again after a 451 that another route caused (Standard Webhooks idempotency)."""
    return "msg_" + hashlib.sha256(route.id.encode() + b"\0" + digest).hexdigest()[:32]


def prepare(data: bytes | bytearray, envelope: payload.Envelope,
            groups: Sequence[tuple[Route, tuple[str, ...]]], digest: bytes) -> Batch:
    """Every route's request: JSON parsed once for all JSON routes, raw routes as a view of data.

    digest is the SHA-256 of the message as received, without relay's own Received: line (that line
    differs on every attempt), so that a retried message keeps its webhook-id."""
    parsed: dict[str, Any] | None = None
    requests: list[Request] = []
    uses_message = False
    for route, recipients in groups:
        scoped = dataclasses.replace(envelope, recipients=recipients)
        body: bytes | memoryview
        if route.format is Format.RAW:
            body, headers = memoryview(data), payload.raw_headers(scoped)  # a view: no copy of the message
            uses_message = True
        else:
            if parsed is None:
                parsed = payload.parse(data)
            body, headers = payload.json_body(parsed, scoped), {"Content-Type": "application/json"}
        requests.append(Request(route, recipients, body, headers, webhook_id(route, digest)))
    return Batch(requests, uses_message)


async def post_all(client: HttpClient, batch: Batch, secrets: Mapping[int, Sequence[str]], *,
                   timeout: float) -> list[Delivery]:
    """POST every request of the batch at once, all within timeout seconds."""

    async def post(request: Request) -> Delivery:
        started = time.monotonic()
        headers = request.headers | signing.signed_headers(secrets[request.route.account_id], request.webhook_id,
                                                           request.body)
        result = await client.post(request.route.url, request.body, headers, timeout=timeout,
                                   max_redirects=MAX_REDIRECTS)
        return Delivery(request.route, request.recipients, replies.verdict(result), time.monotonic() - started,
                        request.webhook_id)

    return list(await asyncio.gather(*(post(r) for r in batch.requests)))

