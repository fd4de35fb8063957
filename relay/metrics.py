"""Prometheus metrics shared by the pipeline and the channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from relay.outcomes import Result

MESSAGES = Counter(
    "relay_messages_total", "Submissions by channel and outcome (rejections included)",
    ["channel", "outcome"],
)
RELAY_SECONDS = Histogram(
    "relay_submit_seconds", "Time from a complete submission to its outcome", ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_IN_USE = Gauge("relay_upstream_connections_in_use", "Upstream connections carrying a message")


AUTH_FAILURES = Counter("relay_auth_failures_total", "Failed AUTH attempts", ["channel"])
QUEUE_DEPTH = Gauge("relay_queue_depth", "Messages queued over a daily cap, waiting for delivery")


def counted(channel: str, result: Result) -> Result:
    """Count a submission's result in relay_messages_total.

    Called in one place per channel: where it answers a submission (SmtpHandler.answer, Api.count),
    whoever decided the outcome; a send whose client hung up is counted when it ends (the `gone`
    of Pipeline.submit_detached). The pipeline itself counts nothing, so nothing is counted twice
    and a new refusal cannot go uncounted."""
    MESSAGES.labels(channel, result.outcome.value).inc()
    return result

