"""Assembly: the pipeline, the channels of the registry, background work, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from relay import metrics, systemd, tlslog
from relay.channels import registry
from relay.channels.base import Channel, Endpoint, ServerContext
from relay.config import Config
from relay.dkim import outbound
from relay.dkim import service as domains
from relay.limits import AuthThrottle
from relay.pipeline import Pipeline, recover
from relay.queue import QueueWorker, utcnow
from relay.store.store import Store
from relay.upstream.base import Upstream
from relay.upstream.factory import make_upstream
from relay.webhooks.worker import WebhookWorker

log = logging.getLogger(__name__)


@dataclass
class RelayServer:
    """Everything `relay serve` runs, startable and stoppable from code (the tests do)."""

    cfg: Config
    store: Store
    key_secret: bytes
    upstream: Upstream | None = None
    clock: Callable[[], datetime] = utcnow
    channels: list[Channel] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _queue_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # every path out (both channels' sends, the queue) passes this one upstream: it DKIM-signs
        self.signer = outbound.signing(self.upstream or make_upstream(self.cfg), self.store, self.key_secret,
                                       self.cfg.dkim)
        self.upstream = self.signer
        self.pipeline = Pipeline(self.store, self.signer, self.cfg.limits, self.key_secret,
                                 self.cfg.server.key_cache_seconds, self.cfg.events, self.cfg.bounces.domain)
        self.context = ServerContext(self.cfg, self.store, self.pipeline, self.key_secret, self.clock,
                                     AuthThrottle(self.cfg.smtp.auth_failures_before_delay,
                                                  self.cfg.smtp.auth_failures_before_refusal))
        self.queue_worker = QueueWorker(self.store, self.signer, self.cfg.limits, self.cfg.queue, self.clock,
                                        self.cfg.bounces.domain, self.key_secret)
        self.channels = registry.build(self.context)
        self.webhook_worker = WebhookWorker(self.store, self.cfg.webhooks) if self.cfg.webhooks.worker else None

    @property
    def listening(self) -> list[Endpoint]:
        """Every bound listener of every channel."""
        return [endpoint for channel in self.channels for endpoint in channel.listening]

    def port(self, name: str) -> int:
        """The bound port of a listener ('smtp', 'smtps', 'http', ...)."""
        return next(e.port for e in self.listening if e.name == name)

    def channel(self, name: str) -> Channel:
        """A channel by name."""
        return next(c for c in self.channels if c.name == name)

    async def start(self) -> None:
        """Recover stranded rows, start the channels and the background work, tell systemd."""
        tlslog.install(asyncio.get_running_loop())
        recovered = await recover(self.store, self.cfg.server.recovery_after_seconds, self.pipeline.unsettled)
        if recovered:
            log.warning("recovery: %d message(s) left in flight by a previous run failed and refunded",
                        recovered)
        started: list[Channel] = []
        try:
            for channel in self.channels:
                await channel.start()
                started.append(channel)
        except BaseException:
            for channel in started:
                with contextlib.suppress(Exception):
                    await channel.stop(0)
            raise
        metrics.UPSTREAM_IN_USE.set_function(lambda: self.pipeline.upstream.in_use)
        sweep_period = max(5.0, self.cfg.server.recovery_after_seconds / 2)
        for name, period, work, wait_first in (
            ("recovery sweep", sweep_period, self._recover, True),
            ("retention cleanup", self.cfg.retention.cleanup_interval_seconds, self._clean, False),
            ("gauge refresh", 15.0, self.refresh_gauges, False),
            ("rate-lease give-back", 1.0, self._give_back_leases, True),
            *([("dkim re-check", self.cfg.dkim.recheck_hours * 3600, self._recheck_domains, True)]
              if self.cfg.dkim.recheck_hours > 0 else []),
        ):
            self._tasks.append(asyncio.create_task(self._every(period, name, work, wait_first=wait_first), name=name))
        if self.cfg.queue.worker:
            self._queue_task = asyncio.create_task(self.queue_worker.run(), name="queue-worker")
            self._tasks.append(self._queue_task)
        if self.webhook_worker is not None:
            self._tasks.append(asyncio.create_task(self.webhook_worker.run(), name="webhook-worker"))
        systemd.notify("READY=1")

    @staticmethod
    async def _every(period: float, what: str, work: Callable[[], Awaitable[object]], *,
                     wait_first: bool = False) -> None:
        """Run work every period seconds for the server's lifetime; a failure is logged, never fatal."""
        if wait_first:
            await asyncio.sleep(period)
        while True:
            try:
                await work()
            except Exception:  # a background loop must outlive any one failure
                log.exception("%s failed; will retry", what)
            await asyncio.sleep(period)

    async def _recover(self) -> None:
        """Resolve rows stranded by an instance that died (this one included, before a restart)."""
        await recover(self.store, self.cfg.server.recovery_after_seconds, self.pipeline.unsettled)

    async def _give_back_leases(self) -> None:
        """Unspent rate-limit calls of keys gone quiet go back to the shared window."""
        await self.pipeline.leases.sweep()

    async def _recheck_domains(self) -> None:
        """Look pending DKIM selectors up again, so a published record takes effect unattended."""
        if await domains.recheck_pending(self.store, self.cfg):
            self.signer.ring.invalidate()

    async def refresh_gauges(self) -> None:
        """Set the gauges a scrape cannot compute itself (the queue depth needs a query)."""
        metrics.QUEUE_DEPTH.set(await self.store.queue_depth())

    async def _clean(self) -> None:
        """Retention: delete old bodies and log rows, a batch at a time."""
        retention = self.cfg.retention
        removed = await self.store.cleanup(keep_bodies_hours=retention.keep_bodies_hours,
                                           log_days=retention.log_days, batch=retention.batch_size)
        if any(removed.values()):
            log.info("retention: removed %s", removed)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let work in progress finish (up to grace seconds), then close everything."""
        grace = self.cfg.server.shutdown_grace_seconds if grace is None else grace
        systemd.notify("STOPPING=1")
        deadline = time.monotonic() + grace
        self.queue_worker.stop()  # the delivery in hand finishes within the grace, like SMTP's
        # every channel drains at once, within the same grace
        await asyncio.gather(*(channel.stop(grace) for channel in self.channels), return_exceptions=True)
        while (self.pipeline.in_flight or self.pipeline.settling
               or (self._queue_task is not None and not self._queue_task.done())) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.pipeline.in_flight:
            log.warning("shutdown: the grace ended with %d send(s) still relaying; a send whose outcome "
                        "is not recorded before the database closes stays 'sending' until the recovery "
                        "sweep fails and refunds it", len(self.pipeline.in_flight))
        try:  # unspent rate-limit calls go back to the shared window (else they count for a second)
            await self.pipeline.leases.sweep(everything=True)
        except Exception:
            log.warning("shutdown: unspent rate-limit leases could not be given back", exc_info=True)
        if self.webhook_worker is not None:  # POSTs in flight get what is left of the grace
            await self.webhook_worker.stop_and_wait(max(0.0, deadline - time.monotonic()))
        if self.pipeline.settling:
            log.error("shutdown: %d delivery outcome(s) could not be recorded (database unreachable); "
                      "the next start settles them as failed and refunded", len(self.pipeline.settling))
            for task in self.pipeline.settling:
                task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self.upstream is not None
        await self.upstream.close()
        tlslog.uninstall(asyncio.get_running_loop())


async def serve_until_signalled(server: RelayServer, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; on_ready runs once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()
