"""Webhooks end to end (SPEC.md 'Webhooks'): a live relay, its outbox worker, and a real receiver on
port 0; signatures checked with the reference verifier (PyPI standardwebhooks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relay.events.config import WebhooksConfig
from relay.store.store import Store
from relay.webhooks import manage, schedule
from relay.webhooks.worker import WebhookWorker
from tests.conftest import LiveRelay, Tenant, database_unreachable, eventually, relay_config, start_relay
from tests.webhook_receiver import Receiver, serve_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve_receiver() as r:
        yield r


@pytest.fixture
async def live(db_dsn, store, peer) -> AsyncIterator[LiveRelay]:
    relay = await start_relay(relay_config(db_dsn, peer.url, webhooks={"poll_seconds": 0.2}), store, peer)
    try:
        yield relay
    finally:
        await relay.server.stop(grace=1)


@pytest.fixture
async def http(live: LiveRelay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}", timeout=15) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def register(http: httpx.AsyncClient, t: Tenant, url: str, events: list[str] | None = None) -> dict:
    body: dict = {"url": url} if events is None else {"url": url, "events": events}
    r = await http.post("/v1/webhooks", headers=bearer(t.key), json=body)
    assert r.status_code == 201, r.text
    return r.json()["webhook"]


async def send(http: httpx.AsyncClient, t: Tenant, to: str = "a@dest.test") -> str:
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": to, "text": "hi"})
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


async def attempts(store: Store, endpoint_id: str) -> list[dict]:
    return [a for d in await store.deliveries(endpoint_id) for a in d["attempt_log"]]


async def test_events_are_posted_signed_and_the_reference_verifier_accepts_them(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    hook = await register(http, t, receiver.url("/hook"))
    assert hook["secret"].startswith("whsec_") and hook["events"] is None
    only_bounces = await register(http, t, receiver.url("/bounces"), ["email.bounced"])
    mid = await send(http, t)
    await eventually(lambda: len(receiver.on("/hook")) == 1, what="the email.sent webhook")
    got = receiver.on("/hook")[0]
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "email.sent" and payload["data"]["messageId"] == mid
    assert set(payload) == {"type", "timestamp", "data"}
    event = (await live.store.events(uuid.UUID(mid)))[0]
    assert got.headers["webhook-id"] == str(event["id"]) == payload["data"]["id"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    with pytest.raises(Exception, match="signature"):
        Webhook(only_bounces["secret"]).verify(got.body, got.headers)
    await eventually(lambda: attempts(live.store, hook["id"]), what="the attempt record")
    [attempt] = await attempts(live.store, hook["id"])
    assert attempt["status_code"] == 200 and attempt["response"] == "answer 200" and attempt["latency_ms"] >= 0
    assert receiver.on("/bounces") == []  # not its type
    listed = (await http.get("/v1/webhooks", headers=bearer(t.key))).json()["webhooks"]
    assert {w["id"] for w in listed} == {hook["id"], only_bounces["id"]} and all("secret" not in w for w in listed)


async def test_a_rotated_secret_signs_beside_the_new_one(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    hook = await register(http, t, receiver.url())
    r = await http.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=bearer(t.key))
    assert r.status_code == 200
    new_secret = r.json()["webhook"]["secret"]
    assert new_secret != hook["secret"]
    await send(http, t)
    await eventually(lambda: len(receiver.received) == 1)
    got = receiver.received[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], new_secret):
        Webhook(secret).verify(got.body, got.headers)


async def test_a_failure_is_retried_on_schedule_with_the_same_webhook_id(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    receiver.answers["/hook"] = (500, {})
    hook = await register(http, t, receiver.url("/hook"))
    before = datetime.now(UTC)
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]))
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    wait = delivery["next_attempt_at"] - before
    assert timedelta(seconds=5) <= wait <= timedelta(seconds=5.5) + (datetime.now(UTC) - before)
    receiver.answers["/hook"] = (200, {})
    await eventually(lambda: len(receiver.received) == 2, timeout=15, what="the retry after 5 s")
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body

    async def both_recorded() -> bool:
        return len(await attempts(live.store, hook["id"])) == 2

    await eventually(both_recorded)
    assert [a["status_code"] for a in await attempts(live.store, hook["id"])] == [500, 200]
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "delivered"


async def test_retry_after_delays_the_next_try_by_at_least_that_much(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    receiver.answers["/busy"] = (503, {"Retry-After": "600"})
    hook = await register(http, t, receiver.url("/busy"))
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]))
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["next_attempt_at"] >= datetime.now(UTC) + timedelta(seconds=590)


@pytest.mark.parametrize("asked", ["999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_huge_retry_after_is_capped_and_the_attempt_recorded(live, http, receiver, asked) -> None:
    """An overflowing Retry-After once killed the delivery task (the attempt was never recorded, the
    delivery POSTed again every lease); a far-future date parked it for centuries."""
    t = await live.tenant(credits=10)
    receiver.answers["/busy"] = (503, {"Retry-After": asked})
    hook = await register(http, t, receiver.url("/busy"))
    before = datetime.now(UTC)
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]), what="the attempt record")
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    cap = schedule.RETRY_AFTER_CAP
    assert cap == max(schedule.RETRY_DELAYS)
    assert before + cap <= delivery["next_attempt_at"] <= datetime.now(UTC) + cap
    [attempt] = await attempts(live.store, hook["id"])
    assert attempt["status_code"] == 503 and len(receiver.on("/busy")) == 1


async def test_an_unexpected_error_in_a_delivery_is_recorded_as_a_failed_attempt(live, http, receiver,
                                                                                  caplog) -> None:
    """A delivery whose task raised was never recorded: claimed again every lease, forever."""
    t = await live.tenant(credits=10)
    # a secret the signer refuses (not base64): signing raises inside the delivery task
    endpoint = await live.store.create_endpoint("we_badsecret", t.account_id, receiver.url(), None, "whsec_!!")
    before = datetime.now(UTC)
    await send(http, t)
    await eventually(lambda: attempts(live.store, endpoint["id"]), what="the attempt record")
    [attempt] = await attempts(live.store, endpoint["id"])
    assert attempt["status_code"] == 0 and attempt["error"] == "internal error: BadSecret"
    [delivery] = await live.store.deliveries(endpoint["id"])
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert delivery["next_attempt_at"] >= before + schedule.RETRY_DELAYS[0]  # on schedule, like any failure
    assert receiver.received == []
    assert any(r.levelname == "ERROR" and "unexpected error" in r.getMessage() for r in caplog.records)


async def test_an_answer_with_nul_bytes_is_recorded(live, http, receiver) -> None:
    """PostgreSQL text holds no NUL: an answer with one failed every try to record the attempt, and
    the delivery was POSTed again every lease, forever."""
    t = await live.tenant(credits=10)
    receiver.bodies["/binary"] = b"ok\x00\x01 binary"
    hook = await register(http, t, receiver.url("/binary"))
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]), what="the attempt record")
    [attempt] = await attempts(live.store, hook["id"])
    assert attempt["status_code"] == 200 and attempt["response"] == "ok\ufffd\x01 binary"
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "delivered" and len(receiver.received) == 1


async def test_410_disables_the_endpoint(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    receiver.answers["/gone"] = (410, {})
    hook = await register(http, t, receiver.url("/gone"))
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]))
    [endpoint] = await live.store.endpoints(t.account_id)
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "failed"
    await send(http, t)  # a disabled endpoint gets no delivery for new events
    assert len(await live.store.deliveries(hook["id"])) == 1 and len(receiver.received) == 1


async def test_a_redirect_is_a_failure_and_is_not_followed(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    receiver.answers["/moved"] = (302, {"Location": receiver.url("/elsewhere")})
    hook = await register(http, t, receiver.url("/moved"))
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]))
    [attempt] = await attempts(live.store, hook["id"])
    assert attempt["status_code"] == 302 and attempt["error"] == "redirect not followed"
    assert receiver.on("/elsewhere") == []
    [delivery] = await live.store.deliveries(hook["id"])
    assert delivery["status"] == "pending"


async def test_a_timeout_is_a_failure_recorded_with_status_0(db_dsn, store, peer, receiver) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url, webhooks={"timeout_seconds": 0.5, "poll_seconds": 0.2}),
                             store, peer)
    try:
        t = await live.tenant(credits=10)
        endpoint, _ = await manage.add(store, live.cfg.webhooks, t.account_id, receiver.url("/hang"), None)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}") as http:
            await send(http, t)
        await eventually(lambda: attempts(store, endpoint["id"]))
        [attempt] = await attempts(store, endpoint["id"])
        assert attempt["status_code"] == 0 and attempt["error"].startswith("timeout")
    finally:
        await live.server.stop(grace=1)


async def test_private_targets_are_refused_unless_allowed(live, http, receiver, store) -> None:
    t = await live.tenant(credits=10)
    strict = WebhooksConfig(allow_private_targets=False)
    for url in (receiver.url(), "http://localhost/x", "http://10.0.0.1/x", "http://169.254.169.254/x",
                "ftp://example.com/x"):
        with pytest.raises(Exception, match="refused"):
            await manage.add(store, strict, t.account_id, url, None)
    assert (await http.post("/v1/webhooks", headers=bearer(t.key), json={"url": "ftp://x"})).status_code == 400
    # an endpoint that passed at registration is checked again at delivery
    endpoint = await store.create_endpoint("we_private", t.account_id, receiver.url(), None,
                                           "whsec_" + "A" * 44)
    worker = WebhookWorker(store, WebhooksConfig(allow_private_targets=False, poll_seconds=0.1))
    live.server.webhook_worker.stop()  # only the strict worker runs
    await live.server.webhook_worker.stop_and_wait(1)
    await send(http, t)
    await worker.drain_once()
    await eventually(lambda: attempts(store, endpoint["id"]))
    [attempt] = await attempts(store, endpoint["id"])
    assert attempt["status_code"] == 0 and attempt["error"].startswith("refused-by-ssrf")
    assert receiver.received == []
    await worker.stop_and_wait(1)


async def test_a_hanging_endpoint_does_not_slow_sending(live, http, receiver) -> None:
    t = await live.tenant(credits=1000)
    await register(http, t, receiver.url("/hang"))
    started = time.monotonic()
    for i in range(40):
        await send(http, t, f"r{i}@dest.test")
    took = time.monotonic() - started
    # every send was answered while its webhooks hang (15 s timeout each): no send waited on one
    assert receiver.hanging >= 1 and took < live.cfg.webhooks.timeout_seconds
    assert len(live.peer.messages) == 40 and await live.balance(t) == 960


async def test_two_workers_deliver_every_event_exactly_once(db_dsn, store, receiver) -> None:
    account = await store.create_account("two-workers", 100)
    endpoint = await store.create_endpoint("we_two", account.id, receiver.url(), None, "whsec_" + "B" * 44)
    async with store.pool.acquire() as conn:
        await conn.execute("SELECT relay_event($1, NULL, 'email.sent', NULL, '{}') FROM generate_series(1, 60)",
                           account.id)
    other = await Store.connect(db_dsn)
    cfg = WebhooksConfig(allow_private_targets=True, poll_seconds=0.05, concurrency=8)
    workers = [WebhookWorker(store, cfg), WebhookWorker(other, cfg)]
    tasks = [asyncio.create_task(w.run()) for w in workers]

    async def all_delivered() -> bool:
        return bool(await store.pool.fetchval(
            "SELECT count(*) = 60 FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'delivered'",
            endpoint["id"]))

    try:
        await eventually(all_delivered, timeout=30, what="60 deliveries recorded as delivered")
        # then nothing more may arrive: both loops end (no claim under way), and the POSTs still in
        # flight, a duplicate among them, finish before the count
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        for w in workers:
            await w.stop_and_wait(10)
        ids = [h.headers["webhook-id"] for h in receiver.received]
        assert len(ids) == 60 and len(set(ids)) == 60
    finally:
        for w in workers:
            await w.stop_and_wait(1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.close()


async def test_a_claim_whose_worker_died_is_delivered_after_its_lease(db_dsn, store, receiver) -> None:
    """kill -9 between claim and record: the lease runs out and another worker sends it (at least once)."""
    account = await store.create_account("dead-worker", 100)
    await store.create_endpoint("we_dead", account.id, receiver.url(), None, "whsec_" + "C" * 44)
    await store.pool.execute("SELECT relay_event($1, NULL, 'email.sent', NULL, '{}')", account.id)
    [claimed] = await store.claim_deliveries(10, lease_seconds=1.0)  # and then the worker "dies"
    assert await store.claim_deliveries(10, lease_seconds=1.0) == []  # leased: nobody else takes it
    worker = WebhookWorker(store, WebhooksConfig(allow_private_targets=True, poll_seconds=0.1))
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len(receiver.received) == 1, timeout=10)
        assert receiver.received[0].headers["webhook-id"] == str(claimed.event["id"])
    finally:
        await worker.stop_and_wait(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_events_written_during_a_database_outage_are_not_lost(live, http, receiver, pg) -> None:
    t = await live.tenant(credits=10)
    await register(http, t, receiver.url())
    receiver.answers["/hook"] = (200, {})
    mid = await send(http, t)
    async with database_unreachable(live, pg.admin_dsn):
        await asyncio.sleep(0.5)  # the worker's polls fail meanwhile
    mid2 = await send(http, t)
    await eventually(lambda: len(receiver.received) >= 2, timeout=15)
    got = {h.doc["data"]["messageId"] for h in receiver.received}
    assert {mid, mid2} <= got


def test_the_retry_schedule_is_spec_md_with_jitter() -> None:
    import random

    rand = random.Random(1)
    expected = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    for attempt, base in enumerate(expected, start=1):
        delay = schedule.next_delay(attempt, rand)
        assert delay is not None and base <= delay.total_seconds() <= base * 1.1
    assert schedule.next_delay(len(expected) + 1) is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.retry_after("120", now) == timedelta(seconds=120)
    assert schedule.retry_after("Thu, 01 Jan 2026 00:10:00 GMT", now) == timedelta(minutes=10)
    assert schedule.retry_after("soon", now) is None


def test_retry_after_is_capped_and_odd_values_do_not_raise() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cap = schedule.RETRY_AFTER_CAP
    for huge in ("86401", "999999999999", "9" * 30, "9" * 5000, "Fri, 31 Dec 9999 23:59:59 GMT"):
        assert schedule.retry_after(huge, now) == cap, huge
    assert schedule.retry_after("0" * 5000 + "7", now) == timedelta(seconds=7)
    assert schedule.retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == timedelta(0)
    for odd in ("\u00b2", "-5", "Fri, 31 Dec 99999999999999999999 23:59:59 GMT",
                "Fri, 31 Dec 2026 23:59:59 +99999999999999999999"):
        assert schedule.retry_after(odd, now) is None, odd


async def test_an_endpoint_failing_for_five_days_is_disabled(live, http, receiver) -> None:
    t = await live.tenant(credits=10)
    receiver.answers["/down"] = (500, {})
    hook = await register(http, t, receiver.url("/down"))
    await live.store.pool.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' "
                                  "WHERE id = $1", hook["id"])
    await send(http, t)
    await eventually(lambda: attempts(live.store, hook["id"]))
    [endpoint] = await live.store.endpoints(t.account_id)
    assert endpoint["enabled"] is False and endpoint["disabled_reason"] == "nothing but failures for too long"


async def test_webhook_api_is_per_account(live, http, receiver) -> None:
    a = await live.tenant(credits=10)
    b = await live.tenant(credits=10)
    hook = await register(http, a, receiver.url())
    assert (await http.get("/v1/webhooks", headers=bearer(b.key))).json()["webhooks"] == []
    assert (await http.delete(f"/v1/webhooks/{hook['id']}", headers=bearer(b.key))).status_code == 404
    assert (await http.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=bearer(b.key))).status_code == 404
    bad = await http.post("/v1/webhooks", headers=bearer(a.key), json={"url": receiver.url(), "events": ["x"]})
    assert bad.status_code == 400 and "unknown event type" in bad.json()["error"]
    assert (await http.delete(f"/v1/webhooks/{hook['id']}", headers=bearer(a.key))).status_code == 200
    assert (await http.get("/v1/webhooks", headers=bearer(a.key))).json()["webhooks"] == []


async def test_webhook_commands(db_dsn, store, receiver) -> None:
    import json

    from tests.test_cli import run

    account = await store.create_account("hooks", 10)
    env = {"RELAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true"}
    code, out, err = await run(db_dsn, "webhook", "add", "hooks", receiver.url(), "--events",
                               "email.bounced,email.complained", "--json", env=env)
    assert code == 0, err
    added = json.loads(out)
    assert added["secret"].startswith("whsec_") and added["events"] == ["email.bounced", "email.complained"]
    code, out, _ = await run(db_dsn, "webhook", "list", "--account", "hooks", "--json")
    assert [(e["id"], e["account_id"]) for e in json.loads(out)] == [(added["id"], account.id)]
    assert "secret" not in json.loads(out)[0]
    code, out, _ = await run(db_dsn, "webhook", "rotate-secret", added["id"], "--json")
    assert code == 0 and json.loads(out)["secret"] not in (added["secret"], None)
    code, _, err = await run(db_dsn, "webhook", "add", "hooks", receiver.url())  # private: refused by default
    assert code == 1 and "refused" in err and err.count("\n") == 1
    code, _, err = await run(db_dsn, "webhook", "add", "hooks", receiver.url(), "--events", "email.nope", env=env)
    assert code == 1 and "unknown event type" in err
    assert (await run(db_dsn, "webhook", "remove", added["id"]))[0] == 0
    code, _, err = await run(db_dsn, "webhook", "remove", added["id"])
    assert code == 1 and "no such webhook endpoint" in err


async def test_a_delivery_survives_kill_9_of_relay_serve(db_dsn, store, receiver, tmp_dir) -> None:
    """relay serve is killed with SIGKILL while a webhook POST hangs; the next start delivers it."""
    import os
    import signal
    import socket
    import sys
    from pathlib import Path

    from relay import keys
    from tests.conftest import KEY_SECRET

    account = await store.create_account("kill9", 10)
    await store.add_sender(account.id, "app@example.com", None)
    key_id, secret = keys.new_key_id(), keys.new_secret()
    await store.create_key(key_id, account.id, keys.digest(KEY_SECRET, secret), "k", None)
    await store.create_endpoint("we_kill", account.id, receiver.url("/hang"), None, "whsec_" + "D" * 44)

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(),
               RELAY_SMTP_LISTEN=f"127.0.0.1:{free_port()}", RELAY_HTTP_LISTEN=f"127.0.0.1:{http_port}",
               RELAY_UPSTREAM_URL=f"maildir:{tmp_dir / 'maildir'}", RELAY_SERVER_DATA_DIR=str(tmp_dir),
               RELAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS="true", RELAY_WEBHOOKS_TIMEOUT_SECONDS="2",
               RELAY_WEBHOOKS_LEASE_SECONDS="7", RELAY_WEBHOOKS_POLL_SECONDS="0.2", RELAY_QUEUE_WORKER="false")
    relay_bin = str(Path(sys.executable).parent / "relay")

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(relay_bin, "serve", env=env, stderr=asyncio.subprocess.DEVNULL)

        async def up() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", http_port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(up, timeout=20, what="relay serve listening")
        return proc

    first = await start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            r = await http.post("/v1/send", headers={"Authorization": f"Bearer {keys.format_key(key_id, secret)}"},
                                json={"from": "app@example.com", "to": "a@dest.test", "text": "hi"})
        assert r.status_code == 200, r.text
        await eventually(lambda: receiver.hanging == 1, what="the webhook POST hanging")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    receiver.release.set()  # the endpoint answers from now on
    second = await start()
    try:
        await eventually(lambda: len(receiver.received) == 2, timeout=20, what="the redelivery after kill -9")
        first_try, again = receiver.received
        assert first_try.headers["webhook-id"] == again.headers["webhook-id"]

        async def delivered() -> bool:
            return bool(await store.pool.fetchval(
                "SELECT count(*) = 1 FROM webhook_deliveries WHERE status = 'delivered'"))

        await eventually(delivered, what="the delivery recorded as delivered")
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
