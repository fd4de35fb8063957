"""Tests for relay.bounces.token: VERP bounce addresses round-trip and refuse forgeries."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.bounces import token

SECRET = b"server key secret for tests"
DOMAIN = "bounces.example.com"
MESSAGE = uuid.UUID("0b0e6a52-4f0e-4c39-9d43-2f8e6f4b8a11")


def test_round_trip_and_shape() -> None:
    address = token.make(MESSAGE, 3, SECRET, DOMAIN)
    local, _, domain = address.partition("@")
    assert domain == DOMAIN
    assert local.startswith("b+")
    assert len(local.encode()) <= 64
    assert local == local.lower() and set(local[2:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert token.parse(address, DOMAIN, SECRET) == (MESSAGE, 3)


def test_case_folded_and_bracketed_addresses_still_parse() -> None:
    address = token.make(MESSAGE, 0, SECRET, DOMAIN)
    assert token.parse(address.upper(), DOMAIN, SECRET) == (MESSAGE, 0)
    assert token.parse(f" <{address}> ", "Bounces.Example.COM.", SECRET) == (MESSAGE, 0)


@given(st.uuids(), st.integers(0, token.MAX_RECIPIENT_INDEX))
def test_any_message_and_index_round_trip(message_id: uuid.UUID, index: int) -> None:
    address = token.make(message_id, index, SECRET, DOMAIN)
    assert len(address.partition("@")[0]) <= 64
    assert token.parse(address, DOMAIN, SECRET) == (message_id, index)


def test_other_secret_is_refused() -> None:
    address = token.make(MESSAGE, 1, SECRET, DOMAIN)
    assert token.parse(address, DOMAIN, b"another server") is None


def test_other_domain_is_refused() -> None:
    address = token.make(MESSAGE, 1, SECRET, DOMAIN)
    assert token.parse(address, "bounces.example.org", SECRET) is None


@pytest.mark.parametrize("position", [2, 10, 30, 46])
def test_every_altered_character_is_refused(position: int) -> None:
    address = token.make(MESSAGE, 1, SECRET, DOMAIN)
    for replacement in "a7":
        if address[position] == replacement:
            continue
        forged = address[:position] + replacement + address[position + 1:]
        assert token.parse(forged, DOMAIN, SECRET) is None, forged


def test_a_token_moved_to_another_recipient_is_refused() -> None:
    # Same message, another index, old tag: the HMAC covers the index too.
    real = token.make(MESSAGE, 1, SECRET, DOMAIN)
    other = token.make(MESSAGE, 2, SECRET, DOMAIN)
    spliced = other[:2 + 29] + real[2 + 29:]  # first 18 bytes (payload) of one, tag of the other
    assert spliced != real and token.parse(spliced, DOMAIN, SECRET) is None


@pytest.mark.parametrize("address", [
    "", "@", "b+@bounces.example.com", "alice@bounces.example.com", "b+abc@bounces.example.com",
    "b+" + "a" * 45 + "@bounces.example.com", "b+" + "1" * 45 + "@bounces.example.com",
    "b+" + "a" * 46 + "@bounces.example.com", "no-at-sign", "b+" + "=" * 45 + "@bounces.example.com",
])
def test_garbage_is_refused(address: str) -> None:
    assert token.parse(address, DOMAIN, SECRET) is None


@given(st.text(max_size=120))
def test_any_text_parses_to_none_or_a_pair(address: str) -> None:
    assert token.parse(address, DOMAIN, SECRET) is None


def test_non_canonical_spelling_of_a_valid_token_is_refused() -> None:
    # 28 bytes in 45 base32 characters leave one spare bit in the last character.
    address = token.make(MESSAGE, 1, SECRET, DOMAIN)
    local, _, domain = address.partition("@")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    flipped = alphabet[alphabet.index(local[-1]) ^ 1]
    assert token.parse(f"{local[:-1]}{flipped}@{domain}", DOMAIN, SECRET) is None


def test_index_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError):
        token.make(MESSAGE, token.MAX_RECIPIENT_INDEX + 1, SECRET, DOMAIN)
    with pytest.raises(ValueError):
        token.make(MESSAGE, -1, SECRET, DOMAIN)
