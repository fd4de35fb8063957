"""The operator's data: accounts and credits, authorized senders, API keys."""

from __future__ import annotations

import asyncpg

from relay.domain import Account, KeyInfo, SenderRule
from relay.errors import StoreError
from relay.store.base import StoreBase, row, translated

_KEY_FIELDS = "id, account_id, name, enabled, calls_per_minute, created_at, last_used_at"


@translated
class AdminStore(StoreBase):
    """Accounts, senders and keys."""

    # -- accounts ------------------------------------------------------------------------

    async def create_account(self, name: str, credits: int = 0) -> Account:
        """A new account, with an opening top-up in the ledger when credits > 0."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                record = await conn.fetchrow(
                    "INSERT INTO accounts (name, credits) VALUES ($1, $2) "
                    "RETURNING id, name, credits, created_at", name, credits,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"an account named {name!r} already exists") from None
            assert record is not None
            if credits:
                await conn.execute(
                    "INSERT INTO credit_ledger (account_id, delta, kind) VALUES ($1, $2, 'topup')",
                    record["id"], credits,
                )
        return Account(**row(record))

    async def find_account(self, ref: str) -> Account:
        """The account named ref, or with id ref; StoreError when there is none."""
        # A name is looked up first; an all-digit ref may also be an id. The choice is made here and
        # not in one SQL statement, whose AND order PostgreSQL does not promise: under a generic plan
        # it could cast a name such as 'acct5' to bigint and fail.
        record = await self.pool.fetchrow(
            "SELECT id, name, credits, created_at FROM accounts WHERE name = $1", ref)
        if record is None and ref.isascii() and ref.isdigit() and len(ref) <= 18:
            record = await self.pool.fetchrow(
                "SELECT id, name, credits, created_at FROM accounts WHERE id = $1", int(ref))
        if record is None:
            raise StoreError(f"no account {ref!r}")
        return Account(**row(record))

    async def list_accounts(self) -> list[Account]:
        """All accounts, by id."""
        records = await self.pool.fetch("SELECT id, name, credits, created_at FROM accounts ORDER BY id")
        return [Account(**row(r)) for r in records]

    async def add_credits(self, account_id: int, amount: int) -> int:
        """Top up a balance (recorded in the ledger); the new balance."""
        async with self.pool.acquire() as conn, conn.transaction():
            balance = await conn.fetchval(
                "UPDATE accounts SET credits = credits + $2 WHERE id = $1 RETURNING credits",
                account_id, amount,
            )
            await conn.execute(
                "INSERT INTO credit_ledger (account_id, delta, kind) VALUES ($1, $2, 'topup')",
                account_id, amount,
            )
        return int(balance)

    async def ledger_balance(self, account_id: int) -> int:
        """The balance recomputed from the ledger alone (it must equal accounts.credits)."""
        return int(await self.pool.fetchval(
            "SELECT coalesce(sum(delta), 0) FROM credit_ledger WHERE account_id = $1", account_id,
        ))

    async def balance(self, account_id: int) -> int:
        """The current balance."""
        return int(await self.pool.fetchval("SELECT credits FROM accounts WHERE id = $1", account_id))

    # -- senders -------------------------------------------------------------------------

    async def add_sender(self, account_id: int, pattern: str, daily_cap: int | None) -> SenderRule:
        """Authorize an address or domain (again: update its cap)."""
        record = await self.pool.fetchrow(
            "INSERT INTO senders (account_id, pattern, daily_cap) VALUES ($1, $2, $3) "
            "ON CONFLICT (account_id, pattern) DO UPDATE SET daily_cap = EXCLUDED.daily_cap "
            "RETURNING pattern, daily_cap", account_id, pattern.lower(), daily_cap,
        )
        assert record is not None
        return SenderRule(**row(record))

    async def list_senders(self, account_id: int) -> list[SenderRule]:
        """An account's authorized senders."""
        records = await self.pool.fetch(
            "SELECT pattern, daily_cap FROM senders WHERE account_id = $1 ORDER BY pattern", account_id,
        )
        return [SenderRule(**row(r)) for r in records]

    # -- keys ----------------------------------------------------------------------------

    async def create_key(self, key_id: str, account_id: int, digest: bytes, name: str,
                         calls_per_minute: int | None) -> KeyInfo:
        """Store a new key's digest."""
        record = await self.pool.fetchrow(
            "INSERT INTO api_keys (id, account_id, digest, name, calls_per_minute) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_KEY_FIELDS}",
            key_id, account_id, digest, name, calls_per_minute,
        )
        assert record is not None
        return KeyInfo(**row(record))

    async def get_key(self, key_id: str) -> KeyInfo:
        """A key's public data; StoreError when unknown."""
        record = await self.pool.fetchrow(f"SELECT {_KEY_FIELDS} FROM api_keys WHERE id = $1", key_id)
        if record is None:
            raise StoreError(f"no key {key_id!r}")
        return KeyInfo(**row(record))

    async def list_keys(self, account_id: int) -> list[KeyInfo]:
        """An account's keys."""
        records = await self.pool.fetch(
            f"SELECT {_KEY_FIELDS} FROM api_keys WHERE account_id = $1 ORDER BY created_at", account_id,
        )
        return [KeyInfo(**row(r)) for r in records]

    async def set_key_enabled(self, key_id: str, enabled: bool) -> KeyInfo:
        """Enable or disable a key."""
        status = await self.pool.execute(
            "UPDATE api_keys SET enabled = $2 WHERE id = $1", key_id, enabled,
        )
        if status.endswith(" 0"):
            raise StoreError(f"no key {key_id!r}")
        return await self.get_key(key_id)

    async def rotate_key(self, key_id: str, digest: bytes) -> KeyInfo:
        """Replace a key's secret (the old one stops working at once); the key is enabled."""
        status = await self.pool.execute(
            "UPDATE api_keys SET digest = $2, enabled = true, rotated_at = now() WHERE id = $1",
            key_id, digest,
        )
        if status.endswith(" 0"):
            raise StoreError(f"no key {key_id!r}")
        return await self.get_key(key_id)
