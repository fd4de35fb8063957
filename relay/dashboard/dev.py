"""`relay dev`'s dashboard login: a demo operator with a fresh password printed at each start."""

from __future__ import annotations

import asyncio
import secrets

from relay.dashboard import passwords
from relay.store.store import Store

DEMO_EMAIL = "demo@example.com"


async def demo_login(store: Store, account_name: str) -> tuple[str, str]:
    """Make sure the demo user exists (an operator of the demo account) with a new password;
    (email, password) to print."""
    password = secrets.token_urlsafe(12)
    hashed = await asyncio.to_thread(passwords.hash_password, password)
    if await store.find_user(DEMO_EMAIL) is None:
        account = await store.find_account(account_name)
        await store.add_user(account.id, DEMO_EMAIL, hashed, operator=True)
    else:
        await store.set_password(DEMO_EMAIL, hashed)
    return DEMO_EMAIL, password
