"""Property: whatever body arrives at POST /v1/send, the answer is never a 5xx, and a refusal
relays nothing and moves no credit.

One live relay, API server and tenant serve every example (pytest-asyncio runs the async
@given test on the test's loop); each example compares the balance and the peer's mailbox
with what they were just before it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import Tenant
from tests.http_helpers import Api, serve_api

SENDER = "app@example.com"
FIELDS = ["from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
addresses = st.sampled_from([
    "rcpt@dest.test", "Two Person <two@dest.test>", "RCPT@DEST.TEST", '"Q, Uoted" <q@dest.test>',
    "bad", "a@b", "x@dest.test\r\nBcc: e@evil.test", "", "<>", "x@-dest.test", "ü@dest.test",
    "o'brien+tag@dest.test", "Name <x@dest.test", SENDER,
]) | st.builds(lambda n: f"r{n}@dest.test", st.integers(0, 5))
recipients = addresses | st.lists(addresses, max_size=4)
header_names = st.sampled_from([
    "X-A", "x-a", "Bcc", "From", "content-type", "X A", "X-B\r\n", "List-Unsubscribe", "Resent-From",
    "Subject", "Received", "", "X:Y", "Idempotency-Key", "In-Reply-To", "References",
]) | st.text(max_size=10)
header_values = st.text(max_size=40) | st.sampled_from([
    "a\r\nBcc: x@evil.test", "ok", "é", "=?utf-8?q?x?=", "<m@x.test>", " ", "\t", "x" * 900,
])
good_addresses = st.sampled_from([
    "rcpt@dest.test", "Two Person <two@dest.test>", '"Q, Uoted" <q@dest.test>', "o'brien+tag@dest.test",
    "Zoë <z@dest.test>",
]) | st.builds(lambda n: f"r{n}@dest.test", st.integers(0, 50))
senders = st.sampled_from([SENDER, f"App <{SENDER}>", f'"A \\"B\\"" <{SENDER}>'])
valid = st.fixed_dictionaries(
    {"from": senders, "to": st.lists(good_addresses, min_size=1, max_size=3, unique_by=str.lower)},
    optional={"subject": st.text(max_size=40), "html": st.text(max_size=60),
              "reply_to": good_addresses, "headers": st.dictionaries(
                  st.sampled_from(["X-A", "List-Unsubscribe", "In-Reply-To", "X-Tag"]), st.text(max_size=40),
                  max_size=2)},
).flatmap(lambda doc: st.builds(lambda text: {**doc, "text": text}, st.text(min_size=1, max_size=60)))
valid_looking = st.fixed_dictionaries(
    {"from": st.sampled_from([SENDER, f"App <{SENDER}>", f'"A \\"B\\"" <{SENDER}>', "other@elsewhere.test"]),
     "to": recipients},
    optional={"cc": recipients, "bcc": recipients, "reply_to": recipients, "subject": st.text(max_size=40),
              "html": st.text(max_size=60), "text": st.text(max_size=60),
              "headers": st.dictionaries(header_names, header_values, max_size=3)},
)
mutated = st.tuples(valid_looking, st.sampled_from([*FIELDS, "bogus", "From", ""]), json_values).map(
    lambda t: {**t[0], t[1]: t[2]})
random_objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)


def _encode(doc: Any, ascii_only: bool) -> bytes:
    return json.dumps(doc, ensure_ascii=ascii_only).encode()


bodies = st.one_of(
    st.builds(_encode, valid, st.booleans()),
    st.builds(_encode, valid_looking | mutated | random_objects | json_values, st.booleans()),
    st.binary(max_size=40),
    st.sampled_from([
        b'{"from": "app@example.com", "to": "a@dest.test", "text": "\\ud800"}',
        b'{"from": "app@example.com", "to": "a@dest.test", "text": "x", "text": "y"}',
        b'{"from": "app@example.com", "to": "a@dest.test", "html": "\\u0000<p>"}',
        b"[" * 5000, b"1e999999", b"9" * 5000, b"null", b"\xef\xbb\xbf{}",
    ]),
)


@pytest.fixture
async def fuzz_api(relay) -> AsyncIterator[tuple[Api, Tenant]]:
    tenant = await relay.tenant(credits=1_000_000, sender=SENDER, rate=1_000_000)
    async with serve_api(relay) as api:
        yield api, tenant


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
async def test_any_body_is_answered_without_5xx_and_refusals_move_nothing(
        fuzz_api: tuple[Api, Tenant], body: bytes) -> None:
    api, tenant = fuzz_api
    balance = await api.relay.balance(tenant)
    relayed = len(api.relay.peer.messages)
    response = await api.send(tenant.key, content=body)
    doc = response.json() if response.status_code != 500 else {}
    if response.status_code == 502:
        # an internationalized address is valid (RFC 6531), and this upstream does not offer SMTPUTF8:
        # the one 5xx allowed is the upstream's refusal, nothing relayed, the charge refunded
        assert doc["code"] == "RELAY_FAILED" and "5.6.7" in doc["error"], doc
    else:
        assert response.status_code < 500, (response.status_code, response.text)
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how often each answer came
    if response.status_code in (200, 202):
        assert doc["ok"] is True and doc["status"] in ("sent", "queued")
        [got] = api.relay.peer.messages[relayed:]
        assert got.mail_from == SENDER
        assert await api.relay.balance(tenant) == balance - len(got.recipients)
        assert got.data.count(b"\n") == got.data.count(b"\r\n") and got.data.isascii()
    else:
        assert doc["ok"] is False and doc["code"] and doc["error"], doc
        assert len(api.relay.peer.messages) == relayed
        assert await api.relay.balance(tenant) == balance
