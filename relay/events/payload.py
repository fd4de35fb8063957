"""An event as the API, the CLI and webhooks show it: {id, type, timestamp, messageId, recipient, data}."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

EVENT_TYPES = (
    "email.sent", "email.queued", "email.delivery_delayed", "email.failed", "email.bounced",
    "email.complained", "email.auto_replied", "email.suppressed",
)


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event row (store/events.py or a log row's events) in the public shape."""
    data = event.get("data") or {}
    if isinstance(data, str):
        data = json.loads(data)
    return {"id": _text(event["id"]), "type": event["type"], "timestamp": _text(event["timestamp"]),
            "messageId": _text(event["message_id"]), "recipient": event.get("recipient"), "data": data}


def webhook_body(event: dict[str, Any]) -> bytes:
    """The JSON a webhook POSTs: {"type", "timestamp", "data"}, data carrying the event's id,
    message id and recipient beside its type-specific fields (docs/events.md 'Webhooks')."""
    shown = public_event(event)
    data = {"id": shown["id"], "messageId": shown["messageId"], "recipient": shown["recipient"], **shown["data"]}
    return json.dumps({"type": shown["type"], "timestamp": shown["timestamp"], "data": data},
                      separators=(",", ":")).encode()
