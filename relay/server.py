"""Assembly: pipeline, SMTP listeners on our own loop, the recovery sweep, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from relay import metrics, systemd
from relay.config import Config, parse_listen
from relay.http_api import HttpServer, build_app
from relay.pipeline import Pipeline, recover
from relay.queue import QueueWorker, utcnow
from relay.runtime import ListenError
from relay.smtp_server import AuthThrottle, Channel, RelaySMTP, make_tls_context
from relay.store.store import Store
from relay.upstream.base import Upstream
from relay.upstream.factory import make_upstream

log = logging.getLogger(__name__)


def _reason(exc: OSError) -> str:
    """The plain system reason ('Address already in use'), whatever loop raised it."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _tls_context(section: str, cert: str, key: str) -> ssl.SSLContext:
    """The listener's TLS context; a certificate or key that cannot be loaded is a ListenError
    naming the keys, not the database error it would otherwise be reported as."""
    try:
        return make_tls_context(cert, key)
    except OSError as exc:  # ssl.SSLError is one too
        raise ListenError(f"{section}.tls_cert/{section}.tls_key: cannot load {cert} and {key}: "
                          f"{exc.strerror or exc}") from None


@dataclass
class Listener:
    """One bound listening socket."""

    name: str
    server: asyncio.Server
    port: int


@dataclass
class RelayServer:
    """Everything `relay serve` runs, startable and stoppable from code (the tests do)."""

    cfg: Config
    store: Store
    key_secret: bytes
    upstream: Upstream | None = None
    clock: Callable[[], datetime] = utcnow
    listeners: list[Listener] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _queue_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.upstream = self.upstream or make_upstream(self.cfg)
        self.pipeline = Pipeline(self.store, self.upstream, self.cfg.limits, self.key_secret,
                                 self.cfg.server.key_cache_seconds)
        smtp = self.cfg.smtp
        self.channel = Channel(
            self.pipeline, hostname=smtp.hostname, max_message_bytes=self.cfg.limits.max_message_bytes,
            throttle=AuthThrottle(smtp.auth_failures_before_delay, smtp.auth_failures_before_refusal),
        )
        self.queue_worker = QueueWorker(self.store, self.upstream, self.cfg.limits, self.cfg.queue, self.clock)
        self.http = HttpServer(
            build_app(self.pipeline, hostname=smtp.hostname, max_message_bytes=self.cfg.limits.max_message_bytes),
            shutdown_grace=self.cfg.server.shutdown_grace_seconds,
        )

    def port(self, name: str) -> int:
        """The bound port of a listener ('smtp', 'smtps', 'http')."""
        if name == "http":
            return self.http.port
        return next(lsn.port for lsn in self.listeners if lsn.name == name)

    def _factory(self, *, tls: ssl.SSLContext | None, implicit: bool) -> RelaySMTP:
        smtp = self.cfg.smtp
        return RelaySMTP(
            self.channel, implicit_tls=implicit, tls_context=tls,
            auth_require_tls=not (smtp.allow_plaintext_auth or implicit),
            timeout=smtp.idle_timeout_seconds, command_call_limit=smtp.max_commands,
            proxy_protocol_timeout=5.0 if smtp.proxy_protocol else None,
            loop=asyncio.get_running_loop(),
        )

    async def _listen(self, name: str, address: str, *, starttls: bool, implicit: bool) -> None:
        key = "smtp.listen" if name == "smtp" else "smtp.implicit_tls_listen"
        host, port = parse_listen(key, address)
        loop = asyncio.get_running_loop()
        context = (_tls_context("smtp", self.cfg.smtp.tls_cert, self.cfg.smtp.tls_key)
                   if starttls or implicit else None)
        try:
            server = await loop.create_server(
                lambda: self._factory(tls=context if starttls else None, implicit=implicit), host, port,
                ssl=context if implicit else None, reuse_address=True, start_serving=True,
            )
        except OSError as exc:
            raise ListenError(f"{key}: cannot listen on {address}: {_reason(exc)}") from None
        bound = server.sockets[0].getsockname()
        self.listeners.append(Listener(name, server, int(bound[1])))
        log.info("SMTP %s listening on %s:%s", name, host, bound[1])

    async def start(self) -> None:
        """Recover stranded rows, bind the listeners, start the background work, tell systemd."""
        recovered = await recover(self.store, self.cfg.server.recovery_after_seconds)
        if recovered:
            log.warning("recovery: %d message(s) left in flight by a previous run failed and refunded",
                        recovered)
        tls = bool(self.cfg.smtp.tls_cert)
        await self._listen("smtp", self.cfg.smtp.listen, starttls=tls, implicit=False)
        if self.cfg.smtp.implicit_tls_listen:
            await self._listen("smtps", self.cfg.smtp.implicit_tls_listen, starttls=False, implicit=True)
        http = self.cfg.http
        host, port = parse_listen("http.listen", http.listen)
        if http.tls_cert:
            _tls_context("http", http.tls_cert, http.tls_key)  # uvicorn's own error would say "listen"
        try:
            await self.http.start(host, port, certfile=http.tls_cert or None, keyfile=http.tls_key or None)
        except OSError as exc:
            raise ListenError(f"http.listen: cannot listen on {http.listen}: {_reason(exc)}") from None
        log.info("HTTP%s listening on %s:%s", "S" if http.tls_cert else "", host, self.http.port)
        metrics.UPSTREAM_IN_USE.set_function(lambda: self.pipeline.upstream.in_use)
        sweep_period = max(5.0, self.cfg.server.recovery_after_seconds / 2)
        for name, period, work, wait_first in (
            ("recovery sweep", sweep_period, self._recover, True),
            ("retention cleanup", self.cfg.retention.cleanup_interval_seconds, self._clean, False),
            ("gauge refresh", 15.0, self.refresh_gauges, False),
        ):
            self._tasks.append(asyncio.create_task(self._every(period, name, work, wait_first=wait_first), name=name))
        if self.cfg.queue.worker:
            self._queue_task = asyncio.create_task(self.queue_worker.run(), name="queue-worker")
            self._tasks.append(self._queue_task)
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
        await recover(self.store, self.cfg.server.recovery_after_seconds)

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
        """Stop accepting, let DATA in progress finish (up to grace seconds), then close everything."""
        grace = self.cfg.server.shutdown_grace_seconds if grace is None else grace
        systemd.notify("STOPPING=1")
        for listener in self.listeners:
            listener.server.close()
        # the API drains alongside SMTP, within the same grace
        http_stopped = asyncio.create_task(self.http.stop(grace))
        self.channel.draining = True
        self.queue_worker.stop()  # the delivery in hand finishes within the grace, like SMTP's
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self.channel.connections):
                if not conn.in_data:
                    conn.say_goodbye()
            idle = (not self.channel.connections and not self.pipeline.in_flight
                    and (self._queue_task is None or self._queue_task.done()))
            if idle or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if self.pipeline.in_flight:
            log.warning("shutdown: the grace ended with %d send(s) still relaying; a send whose outcome "
                        "is not recorded before the database closes stays 'sending' until the recovery "
                        "sweep fails and refunds it", len(self.pipeline.in_flight))
        for conn in list(self.channel.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 1)
        await http_stopped
        assert self.upstream is not None
        await self.upstream.close()


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
