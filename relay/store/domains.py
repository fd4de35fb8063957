"""Sending domains and their DKIM keys: add, list, record a DNS check, rotate, remove, load for signing."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from relay.dkim.model import DkimKeyInfo, NewKeyRow, SealedKey, SendingDomain
from relay.errors import StoreError
from relay.store.base import StoreBase, row, translated

_KEY_FIELDS = ("selector, algorithm, public_key, status, active, verified_at, checked_at, check_detail, "
               "created_at")


def taken_message(domain: str) -> str:
    """The StoreError text for a domain that is already a sending domain."""
    return f"domain {domain} is already a sending domain"


@translated
class DomainStore(StoreBase):
    """Sending domains (one account each) and their keys (one active per algorithm)."""

    async def domain_taken(self, domain: str) -> bool:
        """True when domain is already a sending domain (of any account)."""
        return await self.pool.fetchval("SELECT 1 FROM sending_domains WHERE domain = $1", domain) is not None

    async def add_domain(self, account_id: int, domain: str, trusted: bool,
                         keys: Sequence[NewKeyRow]) -> SendingDomain:
        """A new sending domain with its first keys, active; StoreError if the domain is taken."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO sending_domains (domain, account_id, trusted) VALUES ($1, $2, $3)",
                    domain, account_id, trusted)
            except asyncpg.UniqueViolationError:
                raise StoreError(taken_message(domain)) from None
            await self._insert_keys(conn, domain, keys, active=True)
        return await self.find_domain(domain)

    async def add_keys(self, domain: str, keys: Sequence[NewKeyRow], *, active: bool = False) -> SendingDomain:
        """Rotation: new selectors beside the current ones (pending, or active at once when asked)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM sending_domains WHERE domain = $1 FOR UPDATE", domain) is None:
                raise StoreError(f"no sending domain {domain}")
            if active:
                await conn.execute("UPDATE dkim_keys SET active = false WHERE domain = $1 AND algorithm = ANY($2)",
                                   domain, [k.algorithm for k in keys])
            await self._insert_keys(conn, domain, keys, active=active)
        return await self.find_domain(domain)

    @staticmethod
    async def _insert_keys(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, domain: str,
                           keys: Sequence[NewKeyRow], *, active: bool) -> None:
        try:
            await conn.executemany(
                "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, active) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                [(domain, k.selector, k.algorithm, k.sealed, k.public_key, active) for k in keys])
        except asyncpg.UniqueViolationError:
            raise StoreError(f"domain {domain} already has a selector named like "
                             f"{', '.join(k.selector for k in keys)}") from None

    async def find_domain(self, domain: str) -> SendingDomain:
        """A sending domain with its keys; StoreError when there is none."""
        record = await self.pool.fetchrow(
            "SELECT domain, account_id, trusted, created_at FROM sending_domains WHERE domain = $1", domain)
        if record is None:
            raise StoreError(f"no sending domain {domain}")
        keys = await self.pool.fetch(
            f"SELECT {_KEY_FIELDS} FROM dkim_keys WHERE domain = $1 ORDER BY created_at, selector", domain)
        return SendingDomain(**row(record), keys=tuple(DkimKeyInfo(**row(k)) for k in keys))

    async def list_domains(self, account_id: int | None = None) -> list[SendingDomain]:
        """Sending domains (of one account, or all), by name, with their keys."""
        domains = await self.pool.fetch(
            "SELECT domain, account_id, trusted, created_at FROM sending_domains "
            "WHERE $1::bigint IS NULL OR account_id = $1 ORDER BY domain", account_id)
        keys = await self.pool.fetch(
            f"SELECT domain, {_KEY_FIELDS} FROM dkim_keys WHERE domain = ANY($1) ORDER BY created_at, selector",
            [d["domain"] for d in domains])
        by_domain: dict[str, list[DkimKeyInfo]] = {}
        for k in keys:
            fields = row(k)
            by_domain.setdefault(fields.pop("domain"), []).append(DkimKeyInfo(**fields))
        return [SendingDomain(**row(d), keys=tuple(by_domain.get(d["domain"], ()))) for d in domains]

    async def record_check(self, domain: str, selector: str, published: bool, detail: str) -> None:
        """Note a DNS check of one selector. A key seen in DNS is verified; a verified key newer than
        the active one of its algorithm takes over (the rotation's switch). A key once verified stays
        so when a later check misses it (a DNS hiccup must not stop the signing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            key = await conn.fetchrow(
                "UPDATE dkim_keys SET checked_at = now(), check_detail = $3, "
                "status = CASE WHEN $4 THEN 'verified' ELSE status END, "
                "verified_at = CASE WHEN $4 THEN coalesce(verified_at, now()) ELSE verified_at END "
                "WHERE domain = $1 AND selector = $2 RETURNING algorithm, status, active, created_at",
                domain, selector, detail, published)
            if key is None:
                raise StoreError(f"no selector {selector} for domain {domain}")
            if key["status"] != "verified" or key["active"]:
                return
            current = await conn.fetchrow(
                "SELECT selector, created_at FROM dkim_keys WHERE domain = $1 AND algorithm = $2 AND active "
                "FOR UPDATE", domain, key["algorithm"])
            if current is None or current["created_at"] < key["created_at"]:
                await conn.execute("UPDATE dkim_keys SET active = false WHERE domain = $1 AND algorithm = $2 "
                                   "AND active", domain, key["algorithm"])
                await conn.execute("UPDATE dkim_keys SET active = true WHERE domain = $1 AND selector = $2",
                                   domain, selector)

    async def remove_domain(self, domain: str) -> None:
        """Forget a sending domain and all its keys; its mail is no longer signed."""
        status = await self.pool.execute("DELETE FROM sending_domains WHERE domain = $1", domain)
        if status.endswith(" 0"):
            raise StoreError(f"no sending domain {domain}")

    async def remove_key(self, domain: str, selector: str) -> None:
        """Forget one selector's key (after a rotation); the active key cannot be removed this way."""
        async with self.pool.acquire() as conn, conn.transaction():
            active = await conn.fetchval(
                "SELECT active FROM dkim_keys WHERE domain = $1 AND selector = $2 FOR UPDATE", domain, selector)
            if active is None:
                raise StoreError(f"no selector {selector} for domain {domain}")
            if active:
                raise StoreError(f"selector {selector} is the one {domain} is signed with: rotate first, "
                                 "or remove the whole domain")
            await conn.execute("DELETE FROM dkim_keys WHERE domain = $1 AND selector = $2", domain, selector)

    async def signing_keys(self) -> list[SealedKey]:
        """Every key mail is signed with now: active, and verified or of a trusted domain."""
        records = await self.pool.fetch(
            "SELECT k.domain, d.account_id, k.selector, k.algorithm, k.private_key AS sealed "
            "FROM dkim_keys k JOIN sending_domains d USING (domain) "
            "WHERE k.active AND (k.status = 'verified' OR d.trusted) ORDER BY k.domain, k.algorithm DESC")
        return [SealedKey(**row(r)) for r in records]

    async def sealed_key(self, domain: str, selector: str) -> bytes:
        """One selector's sealed private key (for tests and re-sealing; never printed)."""
        sealed = await self.pool.fetchval(
            "SELECT private_key FROM dkim_keys WHERE domain = $1 AND selector = $2", domain, selector)
        if sealed is None:
            raise StoreError(f"no selector {selector} for domain {domain}")
        return bytes(sealed)
