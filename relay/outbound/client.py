"""The shared outbound HTTP client: pooled aiohttp, SSRF-checked connections, one typed result.

Every library error ends here as an `ErrorKind` on an `HttpResult`; callers never see aiohttp.
Redirects are never followed by aiohttp: `post(max_redirects=N)` follows them itself, hop by hop, so
each new host is resolved and checked again (webhooks pass 0 and get the 3xx status back).
aiohttp was measured against httpx for small POSTs to a local app (bench/http_client_bench.py):
about 8,000-9,700 against 400-500 requests/s at 20 concurrent, 100-125 against 2,000-2,300 us of
client CPU per request.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from relay.outbound import ssrf

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_KEPT = 1024  # the first 1 KB of a response is all any caller records or shows
KEEPALIVE_SECONDS = 4.0


class ErrorKind(StrEnum):
    """Why a request got no usable HTTP answer."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    TLS = "tls"
    REFUSED_BY_SSRF = "refused-by-ssrf"
    TOO_MANY_REDIRECTS = "too-many-redirects"
    INSECURE_REDIRECT = "insecure-redirect"  # from https to plain http: the body would go in clear


@dataclass(frozen=True, slots=True)
class HttpResult:
    """What came back: the status (0 when no answer), the first 1 KB, or why there was none."""

    status: int
    body: bytes = b""
    content_type: str = ""  # the media type, lower-case, without parameters
    elapsed: float = 0.0  # seconds, all hops included
    error: ErrorKind | None = None
    detail: str = ""  # a one-line description of the error, for logs and operators
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names, first value of each
    url: str = ""  # the URL that gave this answer (the last hop)
    redirects: int = 0

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.error is None and 200 <= self.status < 300


class _CheckedResolver(AbstractResolver):
    """aiohttp's resolver: the connector connects to exactly the addresses ssrf checked."""

    def __init__(self, policy: ssrf.Policy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Resolve once and check every address (refusal raises ssrf.TargetRefused)."""
        found = await ssrf.resolve_checked(host, port, self.policy, family)
        return [ResolveResult(hostname=host, host=a.host, port=a.port, family=a.family, proto=0,
                              flags=socket.AI_NUMERICHOST) for a in found]

    async def close(self) -> None:
        """Nothing to release."""


def _kind_of(error: BaseException) -> ErrorKind:
    """The error kind of an exception raised while connecting, sending or reading."""
    if isinstance(error, ssrf.TargetRefused):
        return ErrorKind.REFUSED_BY_SSRF
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(error.os_error, ssrf.TargetRefused):
        return ErrorKind.REFUSED_BY_SSRF
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        return ErrorKind.TLS
    if isinstance(error, TimeoutError):
        return ErrorKind.TIMEOUT
    return ErrorKind.UNREACHABLE


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(error.os_error, ssrf.TargetRefused):
        error = error.os_error
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


class HttpClient:
    """One pooled client per process: connections kept alive, a cap per host, TLS verified."""

    def __init__(self, policy: ssrf.Policy, *, limit: int = 100, limit_per_host: int = 10,
                 ssl_context: ssl.SSLContext | None = None, user_agent: str = "relay") -> None:
        self.policy = policy
        self.limit = limit
        self.limit_per_host = limit_per_host
        # None: the system's trust store with hostname checks (aiohttp's default verification)
        self.ssl_context = ssl_context
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limit, limit_per_host=self.limit_per_host,
                # below the 5 s idle timeout of uvicorn and Node servers: a pooled connection is
                # dropped by us before the app drops it under a request we are sending
                keepalive_timeout=KEEPALIVE_SECONDS,
                resolver=_CheckedResolver(self.policy),
                ssl=self.ssl_context if self.ssl_context is not None else True,
            )
            # deadlines are ours (asyncio.timeout_at over all hops); no proxy from the environment,
            # which would connect on our behalf to addresses we never checked; answers uncompressed,
            # since only their first 1 KB is read and it is read as text
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                auto_decompress=False, headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def post(self, url: str, body: bytes | bytearray | memoryview, headers: Mapping[str, str], *, timeout: float,
                   max_redirects: int = 0) -> HttpResult:
        """POST body to url within timeout seconds in all; redirects followed up to max_redirects
        times (the same POST re-sent to each Location), a further one is TOO_MANY_REDIRECTS."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        deadline = loop.time() + timeout
        current = url
        hops = 0
        while True:
            result = await self._once(current, body, headers, deadline)
            location = result.headers.get("location")
            if max_redirects <= 0 or result.status not in REDIRECT_STATUSES or not location:
                return _finish(result, started, hops)
            if hops >= max_redirects:
                return HttpResult(
                    status=0, error=ErrorKind.TOO_MANY_REDIRECTS, url=current, redirects=hops,
                    detail=f"more than {max_redirects} redirects (the last to {location[:200]})",
                    elapsed=time.monotonic() - started)
            following = urljoin(current, location)
            if current.lower().startswith("https:") and not following.lower().startswith("https:"):
                return HttpResult(
                    status=0, error=ErrorKind.INSECURE_REDIRECT, url=current, redirects=hops,
                    detail=f"a redirect from https to {following[:200]} is not followed (the message would "
                           "travel unencrypted)", elapsed=time.monotonic() - started)
            current = following
            hops += 1

    async def _once(self, url: str, body: bytes | bytearray | memoryview, headers: Mapping[str, str],
                    deadline: float) -> HttpResult:
        """One request, no redirect followed; a pooled connection the app closed just as the request
        went out (it answered nothing) is retried once on a new connection, within the deadline."""
        result = await self._attempt(url, body, headers, deadline, retry_stale=True)
        if result is None:
            result = await self._attempt(url, body, headers, deadline, retry_stale=False)
        assert result is not None
        return result

    async def _attempt(self, url: str, body: bytes | bytearray | memoryview, headers: Mapping[str, str],
                       deadline: float, *, retry_stale: bool) -> HttpResult | None:
        """One request; every failure translated into an HttpResult (None: the server hung up
        without answering, and retry_stale asks to be told so)."""
        try:
            _scheme, host, _port = ssrf.split_target(url)
            ssrf.check_address(host, self.policy)  # literals skip the resolver
            async with asyncio.timeout_at(deadline):
                session = self._open()
                async with session.post(url, data=body, headers=dict(headers), allow_redirects=False) as response:
                    kept = await _read_start(response.content)
                    if not response.content.at_eof():
                        response.close()  # unread rest: the connection cannot be reused
                    return HttpResult(
                        status=response.status, body=kept,
                        content_type=(response.content_type or "").lower(),
                        headers={k.lower(): v for k, v in reversed(list(response.headers.items()))},
                        url=url,
                    )
        except aiohttp.ServerDisconnectedError as error:
            if retry_stale:
                return None
            return HttpResult(status=0, error=ErrorKind.UNREACHABLE, detail=_describe(error), url=url)
        except (aiohttp.ClientError, OSError, TimeoutError, ssrf.TargetRefused) as error:
            kind = _kind_of(error)
            detail = "no answer before the deadline" if kind is ErrorKind.TIMEOUT else _describe(error)
            return HttpResult(status=0, error=kind, detail=detail, url=url)


async def _read_start(stream: aiohttp.StreamReader) -> bytes:
    """Up to BODY_KEPT bytes of the body; the rest is never read."""
    kept = bytearray()
    while len(kept) < BODY_KEPT:
        chunk = await stream.read(BODY_KEPT - len(kept))
        if not chunk:
            break
        kept += chunk
    return bytes(kept)


def _finish(result: HttpResult, started: float, hops: int) -> HttpResult:
    """The result with the elapsed time and redirect count of the whole exchange."""
    fields: dict[str, Any] = {name: getattr(result, name) for name in HttpResult.__slots__}
    fields.update(elapsed=time.monotonic() - started, redirects=hops)
    return HttpResult(**fields)
