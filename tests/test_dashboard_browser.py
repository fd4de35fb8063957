"""The dashboard in a real browser (Playwright driving Debian's chromium) against a live relay and database.

Screenshots of each tab go to test-artifacts/screenshots/ (git-ignored); with RELAY_UPDATE_SCREENSHOTS=1
they are also written to docs/screenshots/, which the README shows.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store.store import Store
from tests.conftest import LiveRelay, eventually
from tests.dashboard_helpers import PASSWORD, add_user, base_url, insert_messages, live_dashboard
from tests.peer import Peer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("the browser tests need PyPI playwright (pip install -e '.[test]')", allow_module_level=True)
if not os.path.exists(CHROMIUM):  # pragma: no cover - .ci/run installs it
    pytest.skip(f"no browser at {CHROMIUM}: the dashboard's browser tests need Debian's chromium "
                "(apt-get install chromium)", allow_module_level=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless chromium for one test."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    """A full-page screenshot as a test artifact (and for the docs when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("RELAY_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS / f"{name}.png"))  # the first screenful: the repo stays small


async def log_in(page: Page, url: str, email: str, password: str = PASSWORD) -> None:
    """Fill in the login form by its labels and submit it with the keyboard."""
    await page.goto(f"{url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password").press("Enter")


def smtp_send(port: int, key: str, sender: str, rcpt: str, subject: str) -> tuple[int, bytes]:
    """One message over SMTP with the key as the password (smtplib, in a thread)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("app", key)
        message = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n"
        client.sendmail(sender, [rcpt], message)
        return client.noop()


def smtp_login_code(port: int, key: str) -> int:
    """The reply code to AUTH with this key."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        try:
            client.login("app", key)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return 235


async def _history(store: Store, account_id: int) -> None:
    """A month of log rows for the chart: mostly sent, some queued and failed."""
    for day in range(0, 30):
        await insert_messages(store, account_id, 3 + (day * 7) % 11, status="sent", days_back=day)
        if day % 4 == 1:
            await insert_messages(store, account_id, 2, status="failed", channel="api", days_back=day)
        if day % 6 == 2:
            await insert_messages(store, account_id, 2, status="queued", days_back=day)


async def test_user_journey(db_dsn: str, store: Store, peer: Peer, browser: Browser) -> None:
    """Log in, only one's own logs, filter, open a message, key create/send/disable(535)/rotate, 404s."""
    async with live_dashboard(db_dsn, store, peer, webhooks={"allow_private_targets": True}) as live:
        await _journey(live, store, peer, browser)


async def _journey(live: LiveRelay, store: Store, peer: Peer, browser: Browser) -> None:
    mine, theirs = await live.tenant(credits=500), await live.tenant()
    await store.pool.execute("UPDATE accounts SET name = 'acme' WHERE id = $1", mine.account_id)
    await add_user(store, mine, "alice@acme.test")
    await _history(store, mine.account_id)
    await insert_messages(store, theirs.account_id, 3, sender="secret@other.test")
    their_message = await store.pool.fetchval("SELECT id FROM messages WHERE account_id = $1 LIMIT 1",
                                              theirs.account_id)
    url = base_url(live)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})

    await page.goto(f"{url}/login")
    await shot(page, "login")
    await log_in(page, url, "alice@acme.test")
    await expect(page).to_have_url(f"{url}/overview")
    await expect(page.get_by_text("Balance:")).to_contain_text("500")
    await expect(page.locator("svg.chart rect").first).to_be_visible()
    await shot(page, "overview")
    await page.emulate_media(color_scheme="dark")
    await shot(page, "overview-dark")
    await page.emulate_media(color_scheme="light")

    # Logs: only this account's messages
    await page.get_by_role("link", name="Logs").click()
    await expect(page).to_have_url(f"{url}/logs")
    await expect(page.locator("table.logs tbody tr")).to_have_count(50)
    await expect(page.get_by_text("secret@other.test")).to_have_count(0)
    await shot(page, "logs")
    # filter by status with the form's labelled controls
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(f"{url}/logs?q=&channel=&status=failed&since=&until=")
    rows = page.locator("table.logs tbody tr")
    await expect(rows.first).to_be_visible()
    for status in await page.locator("table.logs tbody .status").all_inner_texts():
        assert status == "failed"
    await shot(page, "logs-filtered")
    # open a message: its failure code and upstream reply
    first_id = await rows.first.locator("a").inner_text()
    await rows.first.locator("a").click()
    await expect(page).to_have_url(f"{url}/logs/{first_id}")
    await expect(page.locator("dl.facts")).to_contain_text("550 5.1.1 no such user")
    await expect(page.locator("dl.facts")).to_contain_text("Failure code550")
    await shot(page, "message")
    # a message id pasted into the search box opens it
    await page.goto(f"{url}/logs")
    await page.get_by_label("Sender address or message id").fill(f"  {first_id} ")
    await page.get_by_label("Sender address or message id").press("Enter")
    await expect(page).to_have_url(f"{url}/logs/{first_id}")
    # another account's message is not found, by URL or by search
    response = await page.goto(f"{url}/logs/{their_message}")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    # API Keys: create one, shown once, and send with it over SMTP
    await page.goto(f"{url}/keys")
    await page.get_by_label("Name").fill("browser key")
    await page.get_by_label("Calls per minute (empty: default)").fill("30")
    await page.get_by_role("button", name="Create key").click()
    new_key = await page.locator("#new-key").input_value()
    assert new_key.startswith("rk_")
    key_id = new_key.split("_")[1]
    await expect(page.locator("table.keys")).to_contain_text("browser key")
    await shot(page, "keys")
    await page.goto(f"{url}/keys")  # shown once: gone when the tab is opened again
    await expect(page.locator("#new-key")).to_have_count(0)
    code, _ = await asyncio.to_thread(smtp_send, live.port, new_key, mine.sender, "you@dest.test", "from the key")
    assert code == 250
    await eventually(lambda: len(peer.messages) == 1, what="the message reached the upstream")
    await page.goto(f"{url}/logs?channel=smtp&status=sent")
    await expect(page.locator("table.logs tbody tr").first).to_contain_text("smtp")
    sent_id = await store.pool.fetchval("SELECT id FROM messages WHERE key_id = $1", key_id)
    await expect(page.get_by_role("link", name=str(sent_id))).to_be_visible()
    await page.goto(f"{url}/keys")
    await expect(page.locator("table.keys tr", has_text="browser key")).not_to_contain_text("never")  # last used

    # disable it: AUTH says 535; enable; rotate: the old secret 535, the new one works
    row = page.locator("table.keys tr", has_text="browser key")
    await row.get_by_role("button", name=f"Disable key {key_id}").click()
    await expect(page.locator("table.keys tr", has_text="browser key")).to_contain_text("disabled")

    async def refused(key: str) -> bool:
        return await asyncio.to_thread(smtp_login_code, live.port, key) == 535
    # AUTH reuses a key lookup for server.key_cache_seconds (1 s); a send is refused at once regardless
    await eventually(lambda: refused(new_key), what="AUTH with the disabled key answers 535")
    await page.locator("table.keys tr", has_text="browser key").get_by_role(
        "button", name=f"Enable key {key_id}").click()
    await expect(page.locator("table.keys tr", has_text="browser key")).to_contain_text("enabled")
    await page.locator("table.keys tr", has_text="browser key").get_by_role(
        "button", name=f"Rotate key {key_id}").click()
    rotated = await page.locator("#new-key").input_value()
    assert rotated.startswith(f"rk_{key_id}_") and rotated != new_key
    assert await asyncio.to_thread(smtp_login_code, live.port, rotated) == 235
    await eventually(lambda: refused(new_key), what="the old secret is refused after rotation")

    # Senders: listed; an account user cannot add one
    await page.get_by_role("link", name="Senders").click()
    await expect(page.get_by_role("cell", name=mine.sender)).to_be_visible()
    await expect(page.get_by_text("ask your operator")).to_be_visible()
    await shot(page, "senders")

    # Suppressions: add one by its labelled field, see it listed
    await page.get_by_role("link", name="Suppressions").click()
    await page.get_by_label("Email address").fill("gone@dest.test")
    await page.get_by_role("button", name="Suppress").click()
    await expect(page.locator("table.suppressions")).to_contain_text("gone@dest.test")
    await shot(page, "suppressions")

    # Webhooks: add an endpoint, its secret shown once
    await page.get_by_role("link", name="Webhooks").click()
    await page.get_by_label("URL").fill("http://127.0.0.1:9/hooks/relay")
    await page.get_by_role("button", name="Add endpoint").click()
    assert (await page.locator("#new-secret").input_value()).startswith("whsec_")
    await expect(page.locator("table.webhooks")).to_contain_text("http://127.0.0.1:9/hooks/relay")
    await shot(page, "webhooks")

    # Inbound routes: a route made with the store (as `relay route add` does) is listed
    await store.create_route(mine.account_id, "*@in.acme.test", "http://127.0.0.1:9/inbound")
    await page.get_by_role("link", name="Inbound routes").click()
    await expect(page.locator("table.routes")).to_contain_text("*@in.acme.test")
    await shot(page, "routes")

    # a POST without the CSRF token, from the page's own origin with its cookies, is refused
    status = await page.evaluate("""async () => (await fetch('/keys', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'name=sneaky'})).status""")
    assert status == 403
    assert "sneaky" not in {k.name for k in await store.list_keys(mine.account_id)}


async def test_keyboard_and_empty_states(db_dsn: str, store: Store, peer: Peer, browser: Browser) -> None:
    """Everything is reachable from the keyboard; an account with nothing says so in words."""
    async with live_dashboard(db_dsn, store, peer) as live:
        tenant = await live.tenant(credits=0)
        await store.pool.execute("DELETE FROM senders WHERE account_id = $1", tenant.account_id)
        await store.pool.execute("DELETE FROM api_keys WHERE account_id = $1", tenant.account_id)
        await add_user(store, tenant, "new@empty.test")
        url = base_url(live)
        page = await browser.new_page()
        await page.goto(f"{url}/login")
        # the email field has focus on arrival (waited for: under load, keys typed before the
        # autofocus lands are lost, and the first character went missing once)
        await expect(page.get_by_label("Email")).to_be_focused()
        await page.keyboard.type("new@empty.test")
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(f"{url}/overview")
        await expect(page.get_by_text("No credit movements yet")).to_be_visible()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        # tab along to the Logs tab and open it with Enter
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.textContent") == "Logs":
                break
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(f"{url}/logs")
        await expect(page.get_by_text("No messages yet")).to_be_visible()
        await page.goto(f"{url}/keys")
        await expect(page.get_by_text("No keys yet")).to_be_visible()
        await page.goto(f"{url}/senders")
        await expect(page.get_by_text("No authorized senders yet")).to_be_visible()
        # every form control has a label
        unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select')]
            .filter(e => !(e.labels && e.labels.length)).map(e => e.name)""")
        assert unlabelled == []


async def test_login_brute_force_is_throttled(db_dsn: str, store: Store, peer: Peer, browser: Browser) -> None:
    """Wrong passwords in a row: after the allowance, even the right one is refused for a while."""
    async with live_dashboard(db_dsn, store, peer, login_failures_per_user=5) as live:
        tenant = await live.tenant()
        await add_user(store, tenant, "target@acme.test")
        url = base_url(live)
        page = await browser.new_page()
        for attempt in range(5):
            await log_in(page, url, "target@acme.test", f"guess-{attempt}-password")
            await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        await log_in(page, url, "target@acme.test")
        await expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
        await expect(page).to_have_url(f"{url}/login")
        await shot(page, "login-throttled")


async def test_operator_switches_accounts(db_dsn: str, store: Store, peer: Peer, browser: Browser) -> None:
    """An operator sees the account switch, changes account, and may authorize a sender."""
    async with live_dashboard(db_dsn, store, peer) as live:
        home, other = await live.tenant(), await live.tenant()
        await insert_messages(store, other.account_id, 2, sender="someone@other.test")
        await add_user(store, home, "op@relay.test", operator=True)
        url = base_url(live)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await log_in(page, url, "op@relay.test")
        await page.goto(f"{url}/logs")
        await expect(page.get_by_text("someone@other.test")).to_have_count(0)
        other_name = await store.pool.fetchval("SELECT name FROM accounts WHERE id = $1", other.account_id)
        await page.get_by_label("Account").select_option(label=other_name)
        await page.get_by_role("button", name="Switch").click()
        await expect(page).to_have_url(f"{url}/logs")
        await expect(page.get_by_text("someone@other.test").first).to_be_visible()
        await page.goto(f"{url}/senders")
        await page.get_by_label("Address or domain").fill("not a domain")
        await page.get_by_role("button", name="Authorize").click()
        await expect(page.locator("#pattern-error")).to_contain_text("Enter an email address")
        await page.get_by_label("Address or domain").fill("news.other.test")
        await page.get_by_role("button", name="Authorize").click()
        await expect(page.get_by_role("cell", name="news.other.test")).to_be_visible()
        assert "news.other.test" in [s.pattern for s in await store.list_senders(other.account_id)]
        # Domains: an operator adds a sending domain and gets the records to publish
        await page.get_by_role("link", name="Domains").click()
        await page.get_by_label("Domain", exact=True).fill("news.other.test")
        await page.get_by_role("button", name="Add domain").click()
        await expect(page).to_have_url(f"{url}/domains/news.other.test")
        await expect(page.locator("table.records")).to_contain_text("._domainkey.news.other.test")
        await shot(page, "domain")
        await page.goto(f"{url}/domains")
        await expect(page.get_by_role("link", name="news.other.test")).to_be_visible()
        await shot(page, "domains")
