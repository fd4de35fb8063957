"""The Resend-compatible endpoints driven by Resend's official Python SDK (PyPI `resend`), pointed at
relay through its `api_url` module attribute (the SDK also reads RESEND_API_URL)."""

from __future__ import annotations

import base64
import email
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from typing import Any

import pytest
import resend
from resend.exceptions import (
    InvalidApiKeyError,
    MissingRequiredFieldsError,
    RateLimitError,
    ResendError,
    ValidationError,
)

from tests.conftest import Tenant, assert_untouched
from tests.http_helpers import Api, serve_api


@pytest.fixture
async def api(relay) -> AsyncIterator[Api]:
    async with serve_api(relay) as served:
        yield served


@pytest.fixture
def sdk(api: Api) -> Iterator[None]:
    """The SDK's base URL set to the relay under test, as an app switching over would."""
    saved = resend.api_url, resend.api_key
    resend.api_url = f"http://127.0.0.1:{api.port}"
    try:
        yield
    finally:
        resend.api_url, resend.api_key = saved


def params(t: Tenant, **fields: Any) -> Any:
    body: dict[str, Any] = {"from": f"Acme <{t.sender}>", "to": ["user@dest.test"], "subject": "Hi",
                            "html": "<p>Hello</p>"}
    body.update(fields)
    return body


async def test_send_with_attachments_tags_and_headers(relay, sdk) -> None:
    t = await relay.tenant(credits=10)
    resend.api_key = t.key
    pdf = os.urandom(5000)
    sent = await resend.Emails.send_async(params(
        t, text="Hello", cc="cc@dest.test", bcc=["bcc@dest.test"], reply_to="help@example.com",
        headers={"X-Entity-Ref-ID": "123"}, tags=[{"name": "category", "value": "welcome"}],
        attachments=[
            {"filename": "invoice.pdf", "content": list(pdf)},  # the SDK's byte-list form
            {"filename": "logo.png", "content": base64.b64encode(b"\x89PNG..").decode(),
             "inline_content_id": "logo"},
        ]))
    mid = sent["id"]
    [got] = relay.peer.messages
    assert sorted(got.recipients) == ["bcc@dest.test", "cc@dest.test", "user@dest.test"]
    message = email.message_from_bytes(got.data, policy=policy.default)
    assert message["X-Entity-Ref-ID"] == "123" and message["Reply-To"] == "help@example.com"
    parts = {p.get_filename(): p for p in message.walk() if p.get_filename()}
    assert parts["invoice.pdf"].get_payload(decode=True) == pdf
    assert parts["logo.png"]["Content-ID"] == "<logo>"
    assert await relay.balance(t) == 7
    got_back = await resend.Emails.get_async(mid)
    assert got_back["id"] == mid and got_back["object"] == "email" and got_back["last_event"] == "sent"
    assert got_back["tags"] == [{"name": "category", "value": "welcome"}]
    assert sorted(got_back["to"]) == ["bcc@dest.test", "cc@dest.test", "user@dest.test"]
    assert got_back["subject"] == "Hi"


async def test_batch_strict_and_permissive(relay, sdk) -> None:
    t = await relay.tenant(credits=10)
    resend.api_key = t.key
    good = [params(t, to=f"r{i}@dest.test") for i in range(3)]
    sent = await resend.Batch.send_async(good)
    assert len(sent["data"]) == 3 and len({e["id"] for e in sent["data"]}) == 3
    assert await relay.balance(t) == 7
    mixed = [params(t, to="ok@dest.test"), params(t, to="broken address")]
    with pytest.raises(ValidationError):  # strict, Resend's default: nothing sent
        await resend.Batch.send_async(mixed)
    assert len(relay.peer.messages) == 3 and await relay.balance(t) == 7
    partial = await resend.Batch.send_async(mixed, {"batch_validation": "permissive"})
    assert len(partial["data"]) == 1 and partial["errors"][0]["index"] == 1
    assert "broken address" in partial["errors"][0]["message"]
    assert len(relay.peer.messages) == 4 and await relay.balance(t) == 6


async def test_scheduled_and_cancelled(relay, sdk) -> None:
    t = await relay.tenant(credits=10)
    resend.api_key = t.key
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    sent = await resend.Emails.send_async(params(t, scheduled_at=when))
    assert (await resend.Emails.get_async(sent["id"]))["last_event"] == "scheduled"
    assert await relay.balance(t) == 9
    cancelled = await resend.Emails.cancel_async(sent["id"])
    assert cancelled["id"] == sent["id"]
    assert (await resend.Emails.get_async(sent["id"]))["last_event"] == "canceled"
    assert relay.peer.messages == [] and await relay.balance(t) == 10


async def test_errors_use_resends_names(relay, sdk) -> None:
    t = await relay.tenant(credits=1)
    resend.api_key = t.key
    with pytest.raises(MissingRequiredFieldsError) as missing:
        await resend.Emails.send_async({"to": "a@dest.test", "subject": "x", "html": "y"})  # type: ignore[typeddict-item]
    assert missing.value.code == 422 and "'from' is required" in missing.value.message
    with pytest.raises(ValidationError):
        await resend.Emails.send_async(params(t, template={"id": "welcome"}))
    with pytest.raises(ValidationError):
        await resend.Emails.send_async(params(t, attachments=[{"path": "https://x.test/a.pdf", "filename": "a.pdf"}]))
    with pytest.raises(RateLimitError) as quota:  # out of credits: Resend's quota error
        await resend.Emails.send_async(params(t, to=["a@dest.test", "b@dest.test"]))
    assert quota.value.error_type == "monthly_quota_exceeded"
    await assert_untouched(relay, t, 1)
    resend.api_key = "rk_nope_nope"
    with pytest.raises(InvalidApiKeyError):
        await resend.Emails.send_async(params(t))
    resend.api_key = t.key
    with pytest.raises(ResendError) as missing_email:
        await resend.Emails.get_async("00000000-0000-0000-0000-000000000000")
    assert missing_email.value.code == 404 and missing_email.value.error_type == "not_found"
    await assert_untouched(relay, t, 1)


async def test_idempotency_key_through_the_sdk(relay, sdk) -> None:
    t = await relay.tenant(credits=10)
    resend.api_key = t.key
    first = await resend.Emails.send_async(params(t), {"idempotency_key": "order-1"})
    again = await resend.Emails.send_async(params(t), {"idempotency_key": "order-1"})
    assert first["id"] == again["id"] and len(relay.peer.messages) == 1
    with pytest.raises(ResendError) as other:
        await resend.Emails.send_async(params(t, subject="else"), {"idempotency_key": "order-1"})
    assert other.value.code == 409 and other.value.error_type == "invalid_idempotent_request"
    assert await relay.balance(t) == 9
