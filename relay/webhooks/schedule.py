"""When a failed webhook delivery is tried again (docs/events.md 'Webhooks'), and what an answer means."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

# Delays after the 1st, 2nd, ... failed attempt; after the last one the delivery is failed.
RETRY_DELAYS = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=14), timedelta(hours=20), timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.1  # each delay is stretched by up to 10 %, so endpoints that failed together do not retry together
RETRY_AFTER_STATUSES = frozenset({429, 503})
# A Retry-After is honoured up to the schedule's longest delay: an endpoint cannot park a delivery
# for centuries (an HTTP date in 9999) or ask for a delay no datetime can hold.
RETRY_AFTER_CAP = max(RETRY_DELAYS)
GONE = 410


def next_delay(failed_attempts: int, rand: random.Random | None = None) -> timedelta | None:
    """The delay before the next try after failed_attempts failures (None: give up)."""
    if failed_attempts < 1 or failed_attempts > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[failed_attempts - 1]
    return base * (1 + (rand or random).uniform(0, JITTER))


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds or an HTTP date) as a delay from now, at most RETRY_AFTER_CAP;
    None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes '²', which int() refuses
        if len(value.lstrip("0")) > 9:  # over 31 years, past the cap (and int() refuses 4300+ digits)
            return RETRY_AFTER_CAP
        return min(timedelta(seconds=int(value.lstrip("0") or "0")), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year of 20 digits
        return None
    if when.tzinfo is None:
        return None
    return min(max(when - now, timedelta(0)), RETRY_AFTER_CAP)
