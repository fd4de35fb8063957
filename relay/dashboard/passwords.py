"""Password hashing for dashboard users: argon2 through libpass (the maintained passlib fork)."""

from __future__ import annotations

from passlib.hash import argon2  # type: ignore[import-untyped, unused-ignore]  # stubs: types-passlib, optional

MIN_LENGTH = 10

# The parameters new hashes get; a stored hash made with others is rehashed at the next login.
HASHER = argon2.using(type="ID")  # type: ignore[no-untyped-call, unused-ignore]  # untyped in the stubs

# Verified against when the email is unknown, so that a wrong email costs as long as a wrong password.
_DUMMY = HASHER.hash("relay-dashboard-no-such-user")


def hash_password(password: str) -> str:
    """A new argon2 hash (PHC string) of password."""
    return str(HASHER.hash(password))


def verify_password(password: str, stored: str | None) -> bool:
    """Does password match the stored hash? A missing or malformed hash is a mismatch (after the
    same work as a real check)."""
    try:
        return bool(HASHER.verify(password, stored or _DUMMY)) and stored is not None
    except (ValueError, TypeError):
        return False


def needs_rehash(stored: str) -> bool:
    """Was this hash made with other parameters than HASHER's (so it should be replaced)?"""
    try:
        return bool(HASHER.needs_update(stored))
    except (ValueError, TypeError):
        return True


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, in words, or None."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > 1024:
        return "the password must have at most 1024 characters"
    return None
