"""POST one message to the app of every route that takes some of its recipients, signed, in parallel,
within one deadline; each answer becomes a Verdict through the reply table."""

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


def webhook_id(route: Route, digest: bytes) -> str:
    """The same id for the same message to the same route, so an app can drop the copy a sending
    server delivers again after a 451 that another route caused (Standard Webhooks idempotency)."""
    return "msg_" + hashlib.sha256(route.id.encode() + b"\0" + digest).hexdigest()[:32]


async def deliver(client: HttpClient, data: bytes, envelope: payload.Envelope,
                  groups: Sequence[tuple[Route, tuple[str, ...]]], secrets: Mapping[int, Sequence[str]],
                  *, timeout: float) -> list[Delivery]:
    """POST data to each group's route (its recipients in the envelope); all within timeout seconds."""
    digest = hashlib.sha256(data).digest()
    parsed: dict[str, Any] | None = None
    requests: list[tuple[Route, tuple[str, ...], bytes, dict[str, str]]] = []
    for route, recipients in groups:
        scoped = dataclasses.replace(envelope, recipients=recipients)
        if route.format is Format.RAW:
            body, headers = data, payload.raw_headers(scoped)
        else:
            if parsed is None:  # parsed once for every JSON route of the message
                parsed = payload.parse(data)
            body, headers = payload.json_body(parsed, scoped), {"Content-Type": "application/json"}
        requests.append((route, recipients, body, headers))
    del parsed  # the POSTs below hold only the bodies

    async def post(route: Route, recipients: tuple[str, ...], body: bytes, headers: dict[str, str]) -> Delivery:
        started = time.monotonic()
        message_id = webhook_id(route, digest)
        headers.update(signing.signed_headers(secrets[route.account_id], message_id, body))
        result = await client.post(route.url, body, headers, timeout=timeout, max_redirects=MAX_REDIRECTS)
        return Delivery(route, recipients, replies.verdict(result), time.monotonic() - started, message_id)

    return list(await asyncio.gather(*(post(*request) for request in requests)))
