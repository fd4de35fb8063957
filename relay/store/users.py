"""Dashboard people: users per account, their sessions, and the failed-login counters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from relay.errors import StoreError
from relay.store.base import StoreBase, row, translated

_USER_FIELDS = "u.id, u.account_id, a.name AS account_name, u.email, u.password_hash, u.operator, " \
               "u.created_at, u.last_login_at"


@dataclass(frozen=True, slots=True)
class User:
    """A person who logs in to the dashboard (password_hash is an argon2 PHC string)."""

    id: int
    account_id: int
    account_name: str
    email: str
    password_hash: str
    operator: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in session: who, which account is in view, its CSRF token and expiry."""

    user: User
    account_id: int
    csrf: str
    expires_at: datetime


def token_hash(token: str) -> bytes:
    """What is stored of a session token: a stolen table cannot be replayed as cookies."""
    return hashlib.sha256(token.encode()).digest()


@translated
class UserStore(StoreBase):
    """Users, sessions and login throttling."""

    # -- users ---------------------------------------------------------------------------

    async def add_user(self, account_id: int, email: str, password_hash: str, operator: bool) -> User:
        """A new user; StoreError when the email is taken."""
        try:
            await self.pool.execute(
                "INSERT INTO users (account_id, email, password_hash, operator) VALUES ($1, $2, $3, $4)",
                account_id, email.lower(), password_hash, operator)
        except asyncpg.UniqueViolationError:
            raise StoreError(f"a user {email.lower()!r} already exists") from None
        user = await self.find_user(email)
        assert user is not None
        return user

    async def find_user(self, email: str) -> User | None:
        """The user with this email, or None."""
        record = await self.pool.fetchrow(
            f"SELECT {_USER_FIELDS} FROM users u JOIN accounts a ON a.id = u.account_id WHERE u.email = $1",
            email.strip().lower())
        return None if record is None else User(**row(record))

    async def list_users(self, account_id: int | None = None) -> list[User]:
        """Users of one account (None: all), by email."""
        records = await self.pool.fetch(
            f"SELECT {_USER_FIELDS} FROM users u JOIN accounts a ON a.id = u.account_id "
            "WHERE $1::bigint IS NULL OR u.account_id = $1 ORDER BY u.email", account_id)
        return [User(**row(r)) for r in records]

    async def set_password(self, email: str, password_hash: str, *, end_sessions: bool = True) -> None:
        """Replace a user's password hash (ending their sessions unless it is a rehash at login)."""
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(
                "UPDATE users SET password_hash = $2 WHERE email = $1 RETURNING id", email.lower(), password_hash)
            if user_id is None:
                raise StoreError(f"no user {email.lower()!r}")
            if end_sessions:
                await conn.execute("DELETE FROM dashboard_sessions WHERE user_id = $1", user_id)

    async def remove_user(self, email: str) -> None:
        """Delete a user (their sessions go with them)."""
        status = await self.pool.execute("DELETE FROM users WHERE email = $1", email.lower())
        if status.endswith(" 0"):
            raise StoreError(f"no user {email.lower()!r}")

    # -- sessions ------------------------------------------------------------------------

    async def open_session(self, user: User, token: str, csrf: str, lifetime: timedelta) -> None:
        """Record a new session for user (viewing their own account) and note the login."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO dashboard_sessions (token_hash, user_id, account_id, csrf, expires_at) "
                "VALUES ($1, $2, $3, $4, now() + $5::interval)",
                token_hash(token), user.id, user.account_id, csrf, lifetime)
            await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user.id)
            # expired sessions and stale failure counts are swept here: logins are rare, so this
            # costs nothing per page
            await conn.execute("DELETE FROM dashboard_sessions WHERE expires_at < now()")
            await conn.execute("DELETE FROM login_failures WHERE window_start < now() - interval '1 day'")

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie token, or None (unknown or expired)."""
        record = await self.pool.fetchrow(
            f"SELECT {_USER_FIELDS}, s.account_id AS view_account, s.csrf, s.expires_at "
            "FROM dashboard_sessions s JOIN users u ON u.id = s.user_id JOIN accounts a ON a.id = u.account_id "
            "WHERE s.token_hash = $1 AND s.expires_at > now()", token_hash(token))
        if record is None:
            return None
        data = row(record)
        view, csrf, expires = data.pop("view_account"), data.pop("csrf"), data.pop("expires_at")
        return Session(User(**data), view, csrf, expires)

    async def switch_account(self, token: str, account_id: int) -> bool:
        """Point an operator's session at another account; False when there is no such account."""
        status = await self.pool.execute(
            "UPDATE dashboard_sessions SET account_id = $2 WHERE token_hash = $1 "
            "AND EXISTS (SELECT 1 FROM accounts WHERE id = $2)", token_hash(token), account_id)
        return not status.endswith(" 0")

    async def close_session(self, token: str) -> None:
        """Log out."""
        await self.pool.execute("DELETE FROM dashboard_sessions WHERE token_hash = $1", token_hash(token))

    # -- throttling ----------------------------------------------------------------------

    async def count_login_attempt(self, scopes: list[str], window: timedelta) -> list[int]:
        """Count one login attempt against each scope (a window that has passed starts over) and
        return each scope's count, this attempt included, in the order of scopes.

        Counted before the password is checked, so that attempts made in parallel each see the
        others (a count read first and written after the check let them all pass)."""
        records = await self.pool.fetch(
            "INSERT INTO login_failures (scope, failures, window_start) "
            "SELECT s, 1, now() FROM unnest($1::text[]) AS s "
            "ON CONFLICT (scope) DO UPDATE SET "
            "failures = CASE WHEN login_failures.window_start > now() - $2::interval "
            "THEN login_failures.failures + 1 ELSE 1 END, "
            "window_start = CASE WHEN login_failures.window_start > now() - $2::interval "
            "THEN login_failures.window_start ELSE now() END "
            "RETURNING scope, failures", scopes, window)
        counts = {r["scope"]: int(r["failures"]) for r in records}
        return [counts[scope] for scope in scopes]

    async def uncount_login_attempt(self, scopes: list[str]) -> None:
        """Take back an attempt counted by count_login_attempt that turned out not to be a failure."""
        await self.pool.execute(
            "UPDATE login_failures SET failures = greatest(failures - 1, 0) WHERE scope = ANY($1::text[])", scopes)

    async def clear_login_failures(self, scope: str) -> None:
        """Forget a scope's failures (a successful login clears its account's count)."""
        await self.pool.execute("DELETE FROM login_failures WHERE scope = $1", scope)
