"""relay_messages_total counts each submission once, where its channel answers it, whoever decided the
outcome (the pipeline or the channel); key checks of routes that submit nothing are not messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tests.conftest import eventually
from tests.http_helpers import Api, body_for, serve_api
from tests.smtp_helpers import Raw, message

OUTCOMES = ("SENT", "INVALID", "KEY_MISSING", "KEY_INVALID", "INSUFFICIENT_CREDITS", "TOO_LARGE")


def _counts(channel: str) -> dict[str, float]:
    return {o: REGISTRY.get_sample_value("relay_messages_total", {"channel": channel, "outcome": o}) or 0.0
            for o in OUTCOMES}


def _auth_failures(channel: str) -> float:
    return REGISTRY.get_sample_value("relay_auth_failures_total", {"channel": channel}) or 0.0


def _delta(before: dict[str, float], channel: str) -> dict[str, float]:
    after = _counts(channel)
    return {o: after[o] - before[o] for o in OUTCOMES if after[o] != before[o]}


@pytest.fixture
async def api(relay) -> AsyncIterator[Api]:
    async with serve_api(relay) as served:
        yield served


async def test_api_sends_are_counted_once_whoever_decides(api: Api) -> None:
    """Refusals decided by the channel (JSON, size), by the pipeline (key, sender, credits) and a
    send: one count each, in the API channel."""
    t = await api.relay.tenant(credits=5)
    poor = await api.relay.tenant(credits=0, sender="poor@example.com")
    before = _counts("api")
    assert (await api.send(t.key, body_for(t))).status_code == 200
    assert (await api.send(t.key, content=b"{nope")).status_code == 400
    assert (await api.send(t.key, body_for(t, **{"from": "someone@elsewhere.test"}))).status_code == 400
    assert (await api.send(poor.key, body_for(poor))).status_code == 402
    assert (await api.send(None, body_for(t))).status_code == 401
    assert (await api.send("rk_000000000000_nope", body_for(t))).status_code == 401
    assert _delta(before, "api") == {"SENT": 1, "INVALID": 2, "INSUFFICIENT_CREDITS": 1, "KEY_MISSING": 1,
                                     "KEY_INVALID": 1}


async def test_routes_that_submit_nothing_count_no_message(api: Api) -> None:
    """A wrong key on a lookup is an authentication failure, not a message."""
    before, failures = _counts("api"), _auth_failures("api")
    assert (await api.get("/v1/messages/00000000-0000-0000-0000-000000000000",
                          "rk_000000000000_nope")).status_code == 401
    assert _delta(before, "api") == {}
    assert _auth_failures("api") - failures == 1


async def test_a_batch_counts_each_of_its_messages(api: Api) -> None:
    t = await api.relay.tenant(credits=5)
    before = _counts("api")
    batch = [body_for(t), "not an object", body_for(t, **{"from": "someone@elsewhere.test"})]
    response = await api.client.post("/v1/send/batch", content=json.dumps(batch).encode(),
                                     headers={"Authorization": f"Bearer {t.key}", "Content-Type": "application/json"})
    assert response.status_code == 207, response.text
    assert _delta(before, "api") == {"SENT": 1, "INVALID": 2}
    refused = await api.client.post("/v1/send/batch", content=b"[]", headers={"Authorization": f"Bearer {t.key}"})
    assert refused.status_code == 400
    assert _delta(before, "api") == {"SENT": 1, "INVALID": 3}  # a batch refused whole is one refusal


async def test_resend_routes_count_what_they_answer(api: Api) -> None:
    t = await api.relay.tenant(credits=5)
    headers = {"Authorization": f"Bearer {t.key}", "Content-Type": "application/json"}
    body = {"from": t.sender, "to": ["user@dest.test"], "subject": "Hi", "html": "<p>Hello</p>"}
    before = _counts("api")
    assert (await api.client.post("/emails", content=json.dumps(body).encode(), headers=headers)).status_code == 200
    bad = {**body, "from": "someone@elsewhere.test"}
    assert (await api.client.post("/emails", content=json.dumps(bad).encode(), headers=headers)).status_code == 422
    permissive = {**headers, "x-batch-validation": "permissive"}
    response = await api.client.post("/emails/batch", content=json.dumps([body, bad]).encode(), headers=permissive)
    assert response.status_code == 200 and len(response.json()["errors"]) == 1, response.text
    assert _delta(before, "api") == {"SENT": 2, "INVALID": 2}
    lookup = await api.client.get("/emails/00000000-0000-0000-0000-000000000000",
                                  headers={"Authorization": "Bearer rk_000000000000_nope"})
    assert lookup.status_code == 403  # Resend answers a wrong key with 403
    assert _delta(before, "api") == {"SENT": 2, "INVALID": 2}  # a lookup is not a message


async def test_smtp_auth_failure_is_not_a_message_but_a_refused_sender_is(relay) -> None:
    t = await relay.tenant()
    before, failures = _counts("smtp"), _auth_failures("smtp")
    raw = await Raw.open(relay.port)
    try:
        assert (await raw.auth("rk_000000000000_nope")).startswith("535")
        assert (await raw.auth(t.key)).startswith("235")
        assert (await raw.cmd("MAIL FROM:<someone@elsewhere.test>")).startswith("550")
    finally:
        raw.close()
    assert _delta(before, "smtp") == {"INVALID": 1}
    assert _auth_failures("smtp") - failures == 1


async def test_a_send_whose_client_hung_up_is_counted_when_it_ends(relay) -> None:
    """Nobody hears the answer, but the message was sent: it is counted once, when the send ends."""
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_delay = 0.5
    before = _counts("smtp")
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    raw.writer.write(message(t.sender) + b".\r\n")
    await raw.writer.drain()
    await asyncio.wait_for(relay.peer.handler.mail_seen.wait(), 10)  # admitted and with the upstream
    raw.writer.transport.abort()
    await eventually(lambda: _delta(before, "smtp") != {})
    assert len(relay.peer.messages) == 1
    assert _delta(before, "smtp") == {"SENT": 1}


def test_messages_are_counted_only_where_a_channel_answers() -> None:
    """The rule of metrics.counted, held to the code: its only callers are the channels' answer
    functions, so a new refusal anywhere else cannot be counted twice or forgotten."""
    import ast
    from pathlib import Path

    import relay

    callers = set()
    for path in Path(relay.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for call in ast.walk(node):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr == "counted"):
                        callers.add(f"{path.stem}.{node.name}")
    assert callers == {"smtp.answer", "http.count"}
