"""Plain types of sending domains: a domain, its keys as the operator sees them, a key as signing needs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DkimKeyInfo:
    """One selector's key, public side only: never the private key."""

    selector: str
    algorithm: str  # 'rsa-sha256' or 'ed25519-sha256'
    public_key: str  # the p= value
    status: str  # 'pending' or 'verified'
    active: bool  # the key mail is signed with (one per algorithm)
    verified_at: datetime | None
    checked_at: datetime | None
    check_detail: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SendingDomain:
    """A sending domain of an account and its keys."""

    domain: str
    account_id: int
    trusted: bool
    created_at: datetime
    keys: tuple[DkimKeyInfo, ...]

    @property
    def status(self) -> str:
        """'verified' when every active key's record was seen in DNS, else 'pending'."""
        active = [k for k in self.keys if k.active]
        return "verified" if active and all(k.status == "verified" for k in active) else "pending"

    @property
    def signing(self) -> bool:
        """Whether mail from this domain is signed now: verified, or trusted by the operator."""
        return any(k.active and (k.status == "verified" or self.trusted) for k in self.keys)


@dataclass(frozen=True, slots=True)
class SealedKey:
    """An active, usable key as the signer loads it (the private key still sealed)."""

    domain: str
    account_id: int
    selector: str
    algorithm: str
    sealed: bytes


@dataclass(frozen=True, slots=True)
class NewKeyRow:
    """A key to store: selector, algorithm, sealed private key, p= value."""

    selector: str
    algorithm: str
    sealed: bytes
    public_key: str
