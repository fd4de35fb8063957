"""An 8-bit message through the whole relay (SMTP in, pipeline, upstream): BODY=8BITMIME reaches the
upstream; an upstream without 8BITMIME gets nothing and the client's credits come back."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.conftest import LiveRelay
from tests.smtp_helpers import message, send

BODY = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\r\n"


def _eight_bit(sender: str) -> bytes:
    data = message(sender, body=BODY, extra_headers="Content-Type: text/plain; charset=utf-8\r\n"
                                                    "Content-Transfer-Encoding: 8bit\r\n")
    assert not data.isascii()
    return data


async def test_an_8bit_message_goes_upstream_with_body_8bitmime(relay: LiveRelay) -> None:
    t = await relay.tenant(credits=10)
    reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], _eight_bit(t.sender))
    assert reply.code == 250
    [got] = relay.peer.messages
    assert "BODY=8BITMIME" in got.mail_options and BODY.encode() in got.data
    assert await relay.balance(t) == 9


async def test_an_8bit_message_to_an_upstream_without_8bitmime_is_refused_and_refunded(relay: LiveRelay) -> None:
    relay.peer.handler.eightbitmime = False
    t = await relay.tenant(credits=10)
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], _eight_bit(t.sender))
    assert 550 <= caught.value.code < 560  # permanent: the same upstream would refuse it again
    assert relay.peer.messages == [] and relay.peer.handler.mail_options == []
    assert await relay.balance(t) == 10
    # a 7-bit message still goes through that upstream
    assert (await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))).code == 250
    assert relay.peer.messages[0].mail_options == [] and await relay.balance(t) == 9
