"""The inbound log's rows: one per route a message went to (or was refused for)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """What happened to one inbound message at one route."""

    account_id: int
    route_id: str
    url: str
    recipients: tuple[str, ...]
    sender: str
    remote_ip: str
    size_bytes: int
    http_status: int  # 0: no HTTP answer
    response_text: str
    smtp_reply: str
    outcome: str  # delivered, refused, deferred, oversize
    duration_ms: int
    webhook_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The row as the API and `--json` show it."""
        return {
            "id": str(self.id), "channel": "inbound", "account_id": self.account_id, "route_id": self.route_id,
            "url": self.url, "recipients": list(self.recipients), "sender": self.sender,
            "remote_ip": self.remote_ip, "size": self.size_bytes, "http_status": self.http_status,
            "response_text": self.response_text, "smtp_reply": self.smtp_reply, "outcome": self.outcome,
            "duration_ms": self.duration_ms, "webhook_id": self.webhook_id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
