"""The HTTPS channel: Starlette parses, the pipeline decides, one table turns outcomes into HTTP.

POST /v1/send, in order (docs/contract.md 'The pipeline, in order'):

1. the bearer key (pipeline.authenticate), from the headers alone: an unauthenticated body is
   never read;
2. the call counted against the key's rate limit (pipeline.open_call), still before the body;
3. the request body size: refused from Content-Length, or while streaming, as soon as it is over
   body_limit() -- never buffered past it;
4. the body decoded as a JSON object, the content (fields, recipients, html + text size), the
   sender's authorization and a first pre-flight (pipeline.authorize), then pipeline.submit
   (idempotency key, full pre-flight, debit, cap, relay).

An `Idempotency-Key` request header makes a retry safe: the pipeline answers a repeat of the same
request with the first answer (marked `Idempotent-Replayed: true`), another request under the
same key with 409, and a repeat while the first is still running with 409 and Retry-After.

Every outcome is written back through HTTP_REPLIES and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import ipaddress
import logging
import math
import os
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from relay import compose, hygiene, metrics, openapi, parity, resend_compat
from relay.addresses import addresses_in_text, needs_smtputf8
from relay.channels.base import Endpoint, ServerContext
from relay.channels.http_guard import Guard, GuardedProtocol, GuardMiddleware
from relay.config import parse_listen
from relay.dkim import api as dkim_api
from relay.domain import Principal
from relay.errors import ListenError
from relay.events import routes as events_routes
from relay.events.payload import public_event
from relay.inbound import api as inbound_api
from relay.limits import AuthThrottle, ConnectionLimit
from relay.outcomes import Outcome, Result, reject
from relay.pipeline import TRANSIENT_ERRORS, Message, Opened, Pipeline, Transaction
from relay.tls import listener_context, make_tls_context

log = logging.getLogger(__name__)

CHANNEL = "api"

# The one table: outcome -> (status, error text). docs/contract.md 'HTTPS API'. {reason} is the pipeline's
# wording, {limit} the size limit in docs/contract.md's style ("10MB").
HTTP_REPLIES: dict[Outcome, tuple[int, str]] = {
    Outcome.SENT: (200, ""),
    Outcome.QUEUED: (202, ""),
    Outcome.SCHEDULED: (202, ""),
    Outcome.INVALID: (400, "{reason}"),
    Outcome.KEY_MISSING: (401, "Missing Authorization bearer token"),
    Outcome.KEY_INVALID: (401, "Invalid API key"),
    Outcome.INSUFFICIENT_CREDITS: (402, "{reason}"),
    Outcome.INSUFFICIENT_FUNDS: (402, "{reason}"),
    Outcome.KEY_DISABLED: (403, "This API key is disabled. Re-enable or rotate it."),
    Outcome.TOO_LARGE: (413, "Body must be under {limit}"),
    Outcome.RATE_LIMITED: (429, "{reason}"),
    Outcome.RELAY_FAILED: (502, "upstream refused the message: {reason}"),
    Outcome.UPSTREAM_UNAVAILABLE: (503, "upstream unavailable, try again later"),
    Outcome.TEMPORARY: (503, "temporary failure, try again later"),
    # issue 4: another payload under the same key 409, the first still running 409 (+ Retry-After)
    Outcome.IDEMPOTENCY_MISMATCH: (409, "{reason}"),
    Outcome.IDEMPOTENCY_IN_FLIGHT: (409, "{reason}"),
    Outcome.SUPPRESSED: (200, ""),  # issue 13: every recipient suppressed, nothing sent or charged
}
# The outcomes that say "retry later", with the Retry-After to send when the pipeline gave none
# (docs/contract.md: 429 and 503 always carry one).
DEFAULT_RETRY_AFTER: dict[Outcome, int] = {
    Outcome.RATE_LIMITED: 1, Outcome.UPSTREAM_UNAVAILABLE: 30, Outcome.TEMPORARY: 5,
    Outcome.IDEMPOTENCY_IN_FLIGHT: 5,
}
# The size limit is on the message (docs/contract.md: html + text, decoded), not on its JSON: a character may
# be spelled as a 6-byte \uXXXX escape (clients with ensure_ascii; Go escapes <, > and & so),
# so a message just under the limit can take up to six times its size in JSON, plus the envelope.
# Past that no body can hold an acceptable message, and it is refused unread; under it the body
# is read and the decoded html + text are measured.
JSON_EXPANSION = 6
JSON_OVERHEAD = 1 << 20
# Memory: a body over LARGE_BODY bytes is buffered only while holding one of LARGE_BODIES places
# (the others wait), so the process holds at most LARGE_BODIES x body_limit() of large bodies.
LARGE_BODY = 1 << 20
LARGE_BODIES = 4
# A refused credential check over HTTP: come back when the throttle's window has moved on.
THROTTLED_RETRY_AFTER = 60
_MAX_ERROR_TEXT = 400
# Decoding and composing cost about 0.1 s of CPU per MB (the email package writes line by line):
# past this size they run in a worker thread so one big message does not stall the shared loop.
_INLINE_BYTES = 64 * 1024
_READY_TIMEOUT = 2.0

Handler = Callable[[Request], Awaitable[Response]]


def body_limit(max_message_bytes: int) -> int:
    """The most request-body bytes /v1/send buffers before answering 413."""
    return JSON_EXPANSION * max_message_bytes + JSON_OVERHEAD


def size_text(size: int) -> str:
    """A size the way docs/contract.md words it: 10485760 -> '10MB'."""
    for unit, name in ((1 << 20, "MB"), (1 << 10, "KB")):
        if size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size} bytes"


def _clean(text: str) -> str:
    return " ".join(text.split())[:_MAX_ERROR_TEXT]


def failure(status: int, error: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The failure envelope."""
    return JSONResponse({"ok": False, "error": error, "code": code}, status_code=status, headers=headers)


def http_reply(result: Result, *, max_message_bytes: int) -> JSONResponse:
    """The response for a pipeline result."""
    status, body, headers = reply_parts(result, max_message_bytes=max_message_bytes)
    return JSONResponse(body, status_code=status, headers=headers)


def reply_parts(result: Result, *, max_message_bytes: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of the response for a pipeline result (HTTP_REPLIES)."""
    status, template = HTTP_REPLIES[result.outcome]
    # a repeated Idempotency-Key: the first submission's answer again (Stripe's header name)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    if result.outcome.accepted:
        accepted: dict[str, Any] = {"ok": True, "messageId": result.message_id, "status": result.outcome.value.lower()}
        if result.suppressed or result.outcome is Outcome.SUPPRESSED:
            accepted["suppressed"] = list(result.suppressed)
        return status, accepted, headers
    if result.outcome in DEFAULT_RETRY_AFTER:
        headers["Retry-After"] = str(result.retry_after or DEFAULT_RETRY_AFTER[result.outcome])
    reason = _clean(result.reason) or result.outcome.value.replace("_", " ").lower()
    body = {"ok": False, "error": template.format(reason=reason, limit=size_text(max_message_bytes)),
            "code": result.outcome.value}
    if result.message_id:  # a logged failure (502/503 after the debit): the caller can look it up
        body["messageId"] = result.message_id
    return status, body, headers


def _bearer(request: Request) -> str | None:
    """The token of 'Authorization: Bearer <token>'; None when absent or another scheme."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _guarded(handler: Handler) -> Handler:
    """Anything unexpected is a 503 TEMPORARY that shows nothing of our internals."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:
            return failure(400, "the client went away", "INVALID")  # nobody reads this
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.url.path)
            return failure(503, HTTP_REPLIES[Outcome.TEMPORARY][1], Outcome.TEMPORARY.value,
                           {"Retry-After": str(DEFAULT_RETRY_AFTER[Outcome.TEMPORARY])})

    return run


async def _cpu(size: int, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run CPU-bound work inline when small, in a worker thread when big."""
    if size <= _INLINE_BYTES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)



def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A log row as the API shows it to its owner."""
    return {
        "messageId": str(row["id"]), "channel": row["channel"], "status": row["status"],
        "keyId": row["key_id"], "sender": row["sender"], "recipientCount": row["recipient_count"],
        "sizeBytes": row["size_bytes"], "creditsCharged": row["credits_charged"],
        "creditsRefunded": row["credits_refunded"], "failureCode": row["failure_code"],
        "upstreamReply": row["upstream_reply"], "deliverAfter": _iso(row["deliver_after"]),
        "createdAt": _iso(row["created_at"]), "updatedAt": _iso(row["updated_at"]),
        "finishedAt": _iso(row["finished_at"]), "subject": row.get("subject"),
        "recipients": row.get("recipients", []),
        "events": [public_event(e) for e in row.get("events", [])], **parity.public_fields(row),
    }


class Api:
    """The route handlers over one pipeline; feature routes (FEATURE_ROUTES) get it too."""

    def __init__(self, pipeline: Pipeline, hostname: str, max_message_bytes: int,
                 context: ServerContext | None = None, throttle: AuthThrottle | None = None) -> None:
        self.pipeline = pipeline
        self.throttle = throttle or AuthThrottle(3, 10)
        self.large_bodies = asyncio.Semaphore(LARGE_BODIES)
        self.store = pipeline.store
        self.context = context
        self.hostname = hostname
        self.max_message_bytes = max_message_bytes
        self.max_body = body_limit(max_message_bytes)

    failure = staticmethod(failure)  # the failure envelope, for feature routes (they cannot import us)

    @staticmethod
    async def cpu(size: int, work: Callable[..., Any], *args: Any) -> Any:
        """CPU-bound work of a feature route: inline when size is small, else in a worker thread."""
        return await _cpu(size, work, *args)

    def reply(self, result: Result) -> JSONResponse:
        """The response for a result, not counted (feature routes that submit nothing)."""
        return http_reply(result, max_message_bytes=self.max_message_bytes)

    def parts(self, result: Result) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, body and headers of reply(result), for routes that answer in another shape."""
        return reply_parts(result, max_message_bytes=self.max_message_bytes)

    def answer(self, result: Result) -> JSONResponse:
        """The response to a submission's result, counted: each submitting route answers here (or
        through count, when it answers in its own shape)."""
        return self.reply(self.count(result))

    @staticmethod
    def count(result: Result) -> Result:
        """Count a submission's result: the HTTP channel's only call of metrics.counted."""
        return metrics.counted(CHANNEL, result)

    async def principal(self, request: Request) -> Principal | Response:
        """The account behind the request's bearer key, or the error response to send (for feature
        routes: the same key check, wording and statuses as /v1/send)."""
        result = await self._principal(request)
        return self.reply(result) if isinstance(result, Result) else result

    async def authenticate(self, request: Request) -> Principal | Result:
        """The key check of a feature route that answers in its own shape (throttled as every key
        check is); the Result to translate when refused."""
        return await self._principal(request)

    async def open(self, request: Request) -> Opened | Result:
        """Steps 1-2 for a submitting feature route (a batch): the key, then the call counted; the
        Result is answered before the body is read (see unread)."""
        principal = await self._principal(request)
        if isinstance(principal, Result):
            return principal
        return await self.pipeline.open_call(principal, CHANNEL)

    async def read_body(self, request: Request, held: contextlib.AsyncExitStack, *,
                        limit: int | None = None) -> bytes | None:
        """The body, or None once over limit bytes (default: the limit of /v1/send; feature routes: a
        batch as a whole); held: the request's exit stack, where a large body keeps its place until
        the request ends."""
        return await self._read_body(request, held, limit)

    async def small_body(self, request: Request, limit: int) -> bytes | Response:
        """A feature route's body of at most limit bytes, or the 413 to answer (never read past the
        limit: refused from Content-Length at once, or while streaming)."""
        async with contextlib.AsyncExitStack() as held:
            body = await self._read_body(request, held, limit)
        if body is None:
            return self._unread(failure(413, f"Body must be under {size_text(limit)}", Outcome.TOO_LARGE.value))
        return body

    async def _principal(self, request: Request) -> Principal | Result:
        """The key check, throttled per client address as SMTP's AUTH is (delay, then 429)."""
        ip = request.client.host if request.client else "unknown"
        async with self.throttle.attempt(ip) as attempt:
            if attempt is None:
                result: Principal | Result = reject(
                    Outcome.RATE_LIMITED, "too many failed authentication attempts from your address",
                    retry_after=THROTTLED_RETRY_AFTER)
            else:
                result = await self.pipeline.authenticate(_bearer(request))
                if isinstance(result, Result) and result.outcome in (Outcome.KEY_INVALID, Outcome.KEY_DISABLED):
                    attempt.failed()  # a wrong key is a guess; no key at all or a database blip is not
        if isinstance(result, Result) and result.outcome is not Outcome.TEMPORARY:
            metrics.AUTH_FAILURES.labels(CHANNEL).inc()
        return result

    async def _read_body(self, request: Request, held: contextlib.AsyncExitStack,
                         limit: int | None = None) -> bytes | None:
        """The body, or None as soon as it is known to be over limit (default: max_body); a large
        one only while holding a place among LARGE_BODIES (held until the request ends)."""
        limit = self.max_body if limit is None else limit
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        large = declared.isdigit() and int(declared) > LARGE_BODY
        if large:
            await held.enter_async_context(self.large_bodies)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > LARGE_BODY and not large:  # no (or a false) Content-Length
                large = True
                await held.enter_async_context(self.large_bodies)
            if len(body) > limit:
                return None
        return bytes(body)

    def _received(self, request: Request) -> str:
        """The Received: trace header, as the SMTP channel writes one."""
        peer = request.client.host if request.client else None
        try:
            peer = str(ipaddress.ip_address(peer)) if peer else None
        except ValueError:
            peer = None
        return hygiene.format_received(
            helo=None, peer_ip=peer, hostname=self.hostname,
            protocol="HTTPS" if request.url.scheme == "https" else "HTTP",
            queue_id=uuid.uuid4().hex[:16], when=datetime.now(UTC),
        )

    def _content(self, doc: dict[str, Any]) -> compose.SendRequest | Result:
        """Steps 3-4 on what the body says: fields, recipients, size."""
        try:
            send = compose.parse_request(doc, max_recipients=self.pipeline.limits.max_recipients)
        except compose.RequestError as exc:
            return reject(Outcome.INVALID, str(exc))
        for i, address in enumerate(send.recipients):
            problem = self.pipeline.check_recipient(address, i)
            if problem:
                return problem
        return self.pipeline.check_size(send.size) or send

    async def _submit(self, opened: Opened, body: bytes, request: Request) -> Result:
        """Steps 3-8 once the call is counted and the body read."""
        try:
            doc = await _cpu(len(body), compose.decode_body, body)
        except compose.RequestError as exc:
            return reject(Outcome.INVALID, str(exc))
        prepared = await self.prepare(opened, doc, request, request.headers.get("idempotency-key"))
        if isinstance(prepared, Result):
            return prepared
        # once admitted, a send runs to its recorded end even if the client goes away
        return await self.pipeline.submit_detached(*prepared, self.count)

    async def prepare(self, opened: Opened, doc: dict[str, Any], request: Request, key: str | None,
                      fingerprint: bytes | None = None) -> tuple[Transaction, Message] | Result:
        """Steps 3-4 on a decoded send body and the composed message (for feature routes too: a batch
        gives each of its messages a key and fingerprint of its own); a Result when refused."""
        send = await _cpu(compose.doc_size(doc), self._content, doc)  # attachments are base64-decoded here
        if isinstance(send, Result):
            return send
        txn = self.pipeline.authorize(opened, send.sender.address)  # the sender (3), the pre-flight (5)
        if isinstance(txn, Result):
            return txn
        data = await _cpu(send.size, compose.compose, send, hostname=self.hostname,
                          received=self._received(request))
        if key is not None and fingerprint is None:  # the key is checked by the pipeline
            fingerprint = compose.fingerprint(send)
        return txn, Message(recipients=send.recipients, from_addresses=(send.sender.address,), data=data,
                            from_display_addresses=addresses_in_text(send.sender.name),
                            # a UTF-8 Reply-To is written in UTF-8 too (RFC 6532): it needs SMTPUTF8
                            smtputf8=any(needs_smtputf8(a) for a in (send.sender.address, *send.recipients,
                                                                     *(box.address for box in send.reply_to))),
                            has_body=send.has_body, size=send.size, idempotency_key=key, subject=send.subject,
                            fingerprint=fingerprint, extras=compose.extras(send))

    # routes ----------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        """POST /v1/send."""
        opened = await self.open(request)  # docs/contract.md: step 2 before 3 and 4, whatever the body
        if isinstance(opened, Result):
            return self._unread(self.answer(opened))
        async with contextlib.AsyncExitStack() as held:
            body = await self._read_body(request, held)
            if body is None:
                too_large = reject(Outcome.TOO_LARGE, "the request body is over the size limit")
                return self._unread(self.answer(too_large))
            return self.answer(await self._submit(opened, body, request))

    @staticmethod
    def unread(response: Response) -> Response:
        """Answered before the body was read (feature routes): see _unread."""
        return Api._unread(response)

    @staticmethod
    def _unread(response: Response) -> Response:
        """Answered before the body was read: close rather than receive (and drop) the rest of it."""
        response.headers["Connection"] = "close"
        return response

    async def message(self, request: Request) -> Response:
        """GET /v1/messages/{id}: the caller's own log row; any other id is 404. (DELETE: parity.cancel)"""
        if request.method == "DELETE":
            return await parity.cancel(self, request)
        principal = await self._principal(request)
        if isinstance(principal, Result):
            return self.reply(principal)
        try:
            message_id = uuid.UUID(request.path_params["message_id"])
        except ValueError:
            return failure(404, "no such message", "NOT_FOUND")
        try:
            row = await self.pipeline.store.message_with_details(message_id)
        except TRANSIENT_ERRORS:
            log.exception("message lookup failed")
            return self.reply(reject(Outcome.TEMPORARY))
        if row is None or row["account_id"] != principal.account_id:
            return failure(404, "no such message", "NOT_FOUND")
        return JSONResponse({"ok": True, **_public_row(row)})

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: the process answers."""
        return JSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        """GET /readyz: the database answers."""
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                await self.pipeline.store.pool.fetchval("SELECT 1")
        except TRANSIENT_ERRORS:
            log.warning("readiness check: the database does not answer", exc_info=True)
            return failure(503, "the database is not reachable", Outcome.TEMPORARY.value,
                           {"Retry-After": str(DEFAULT_RETRY_AFTER[Outcome.TEMPORARY])})
        return JSONResponse({"ok": True})

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        """GET /v1/openapi.json: this API's OpenAPI document (relay/openapi.py)."""
        return JSONResponse(openapi.DOCUMENT)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) in the same envelope as everything else."""
    assert isinstance(exc, HTTPException)
    status = http.HTTPStatus(exc.status_code)
    return failure(status.value, status.phrase, status.name, dict(exc.headers or {}))


# Features that add API routes: each a function (api) -> routes, listed here once.
FEATURE_ROUTES: tuple[Callable[[Api], list[Route]], ...] = (events_routes.routes, inbound_api.routes,
                                                          dkim_api.routes, parity.routes, resend_compat.routes)


def build_app(pipeline: Pipeline, *, hostname: str, max_message_bytes: int,
              context: ServerContext | None = None, throttle: AuthThrottle | None = None) -> Starlette:
    """The ASGI application of the HTTPS API (context: the server's parts, for feature routes)."""
    api = Api(pipeline, hostname, max_message_bytes, context, throttle)
    routes = [
        Route("/v1/send", _guarded(api.send), methods=["POST"]),
        # one route for both methods, so that a 405 on the path lists both in Allow
        Route("/v1/messages/{message_id}", _guarded(api.message), methods=["GET", "DELETE"]),
        Route("/healthz", _guarded(api.healthz), methods=["GET"]),
        Route("/readyz", _guarded(api.readyz), methods=["GET"]),
        Route("/metrics", _guarded(api.metrics), methods=["GET"]),
        Route("/v1/openapi.json", _guarded(api.openapi), methods=["GET"]),
    ]
    for feature in FEATURE_ROUTES:
        routes.extend(Route(r.path, _guarded(r.endpoint), methods=list(r.methods or ()), name=r.name)
                      for r in feature(api))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


async def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; binding here makes a busy port an OSError, not uvicorn's exit."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's Server, minus its signal handling: relay's own handlers decide when every channel
    stops (uvicorn would take SIGTERM for itself and drain HTTP before SMTP even heard of it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone."""
        yield


class HttpServer:
    """uvicorn serving an ASGI app on the caller's running event loop (no signals, no logging setup)."""

    def __init__(self, app: ASGIApp, *, shutdown_grace: float = 30.0, guard: Guard | None = None) -> None:
        self.app = app
        self.guard = guard
        self.shutdown_grace = shutdown_grace
        self._server: _Server | None = None
        self._sockets: list[socket.socket] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, certfile: str | None = None,
                    keyfile: str | None = None) -> None:
        """Bind and start serving; HTTPS when certfile and keyfile are given."""
        tls: dict[str, Any] = {}
        if certfile:
            def context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
                made = make_tls_context(certfile, keyfile or certfile)  # relay's TLS policy (1.2+)
                made.set_alpn_protocols(["http/1.1"])
                return made
            tls = {"ssl_certfile": certfile, "ssl_keyfile": keyfile, "ssl_context_factory": context}
        config = uvicorn.Config(
            self.app, host=host, port=port, loop="none", lifespan="off", log_config=None,
            log_level="warning", access_log=False, server_header=False, **tls,
        )
        config.load()
        if self.guard is not None:
            # per-address limit, header and body deadlines, lingering close (http_guard.py)
            config.http_protocol_class = functools.partial(  # type: ignore[assignment]
                GuardedProtocol, config.http_protocol_class, self.guard)
            config.loaded_app = GuardMiddleware(config.loaded_app, self.guard)
        server = _Server(config)
        self._sockets = [await _bind(host, port)]
        task = asyncio.create_task(server.serve(sockets=self._sockets), name="http-server")
        while not server.started and not task.done():  # serve() has no "ready" signal of its own
            await asyncio.sleep(0.005)
        if task.done():
            self._sockets[0].close()
            task.result()  # its error, if it had one
            raise OSError("the HTTP server stopped during start-up")
        self._server, self._task = server, task

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        assert self._sockets, "not started"
        return int(self._sockets[0].getsockname()[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (up to grace seconds), close the rest."""
        server, self._server = self._server, None
        if server is None or self._task is None:
            return
        if self.guard is not None:
            self.guard.stopping = True
        grace = self.shutdown_grace if grace is None else grace
        server.config.timeout_graceful_shutdown = math.ceil(grace) if grace else 0
        server.should_exit = True
        await self._task


class HttpChannel:
    """The HTTPS API as a channel: uvicorn on the server's loop, on http.listen."""

    name = "http"

    def __init__(self, ctx: ServerContext) -> None:
        cfg = ctx.cfg
        self.cfg = cfg.http
        self.server = HttpServer(
            build_app(ctx.pipeline, hostname=cfg.smtp.hostname, max_message_bytes=cfg.limits.max_message_bytes,
                      context=ctx, throttle=ctx.auth_throttle or AuthThrottle(
                          cfg.smtp.auth_failures_before_delay, cfg.smtp.auth_failures_before_refusal)),
            shutdown_grace=cfg.server.shutdown_grace_seconds,
            guard=Guard(ConnectionLimit(self.cfg.max_connections_per_address), self.cfg.header_timeout_seconds,
                        self.cfg.body_timeout_seconds),
        )
        self._endpoints: list[Endpoint] = []

    @property
    def listening(self) -> list[Endpoint]:
        """The bound listener."""
        return list(self._endpoints)

    async def start(self) -> None:
        """Bind http.listen and serve (HTTPS when a certificate is configured)."""
        http_cfg = self.cfg
        host, port = parse_listen("http.listen", http_cfg.listen)
        if http_cfg.tls_cert:
            listener_context("http", http_cfg.tls_cert, http_cfg.tls_key)  # uvicorn's error would say "listen"
        try:
            await self.server.start(host, port, certfile=http_cfg.tls_cert or None,
                                    keyfile=http_cfg.tls_key or None)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"http.listen: cannot listen on {http_cfg.listen}: {reason}") from None
        self._endpoints = [Endpoint("http", host, self.server.port)]
        log.info("HTTP%s listening on %s:%s", "S" if http_cfg.tls_cert else "", host, self.server.port)

    async def stop(self, grace: float) -> None:
        """Requests in flight may finish within grace."""
        await self.server.stop(grace)


def channels(ctx: ServerContext) -> list[HttpChannel]:
    """The registry's factory: the API is always on."""
    return [HttpChannel(ctx)]
