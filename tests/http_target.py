"""A real HTTP app on port 0 (Starlette under uvicorn, in the test process) that records every request
and answers by path: any status, redirects, hangs, slow bodies, text/plain and text/html bodies."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Received:
    """One request as the app saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    """The running app: its base URL, what it received, and a switch that releases hanging answers."""

    host: str
    port: int
    scheme: str = "http"
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Poll until at least count requests arrived (or fail at the deadline)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} requests arrived, waited for {count}"
            await asyncio.sleep(0.01)
        return self.received


def _app(target: Target) -> Starlette:
    async def record(request: Request) -> Received:
        body = await request.body()
        got = Received(request.method, request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                       {k.lower(): v for k, v in request.headers.items()}, body)
        target.received.append(got)
        return got

    async def status(request: Request) -> Response:
        """/status/{code}[?text=...&type=...]: that status with that body and content type."""
        await record(request)
        code = int(request.path_params["code"])
        text = request.query_params.get("text", f"status {code}")
        media = request.query_params.get("type", "text/plain")
        return Response(text.encode(), status_code=code, media_type=media)

    async def redirect(request: Request) -> Response:
        """/redirect/{n}[?code=307&final=200]: n redirects (relative Location), then status final."""
        await record(request)
        left = int(request.path_params["n"])
        code = int(request.query_params.get("code", "307"))
        final = request.query_params.get("final", "200")
        if left <= 0:
            return PlainTextResponse(f"arrived {final}", status_code=int(final))
        return Response(status_code=code, headers={"Location": f"/redirect/{left - 1}?code={code}&final={final}"})

    async def goto(request: Request) -> Response:
        """/goto?location=URL[&code=302]: one redirect to an absolute URL."""
        await record(request)
        code = int(request.query_params.get("code", "302"))
        return Response(status_code=code, headers={"Location": request.query_params["location"]})

    async def hang(request: Request) -> Response:
        """/hang: no answer until the test releases it (or 60 s)."""
        await record(request)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(target.release.wait(), 60)
        return PlainTextResponse("late")

    async def slow_body(request: Request) -> Response:
        """/slow-body: headers at once, then the body one byte a second."""
        await record(request)

        async def trickle() -> AsyncIterator[bytes]:
            for _ in range(60):
                yield b"x"
                if target.release.is_set():
                    return
                await asyncio.sleep(1)

        return StreamingResponse(trickle(), media_type="text/plain")

    async def pause(request: Request) -> Response:
        """/sleep?s=N: answer 200 after N seconds, counting the requests inside at once."""
        await record(request)
        target.in_flight += 1
        target.max_in_flight = max(target.max_in_flight, target.in_flight)
        try:
            await asyncio.sleep(float(request.query_params.get("s", "0.2")))
        finally:
            target.in_flight -= 1
        return PlainTextResponse("slept")

    async def big(request: Request) -> Response:
        """/big?size=N: N bytes of body."""
        await record(request)
        return PlainTextResponse("y" * int(request.query_params.get("size", "100000")))

    return Starlette(routes=[
        Route("/status/{code:int}", status, methods=["POST", "GET"]),
        Route("/redirect/{n:int}", redirect, methods=["POST", "GET"]),
        Route("/goto", goto, methods=["POST", "GET"]),
        Route("/hang", hang, methods=["POST"]),
        Route("/slow-body", slow_body, methods=["POST"]),
        Route("/sleep", pause, methods=["POST"]),
        Route("/big", big, methods=["POST"]),
    ])


@contextlib.asynccontextmanager
async def serve_target(*, certfile: str | None = None, keyfile: str | None = None,
                       host: str = "127.0.0.1") -> AsyncIterator[Target]:
    """Serve the recording app on host, port 0 (HTTPS with the given certificate) until the block ends."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    target = Target(host=host, port=port, scheme="https" if certfile else "http")
    config = uvicorn.Config(_app(target), loop="none", lifespan="off", log_config=None, log_level="warning",
                            access_log=False, ssl_certfile=certfile, ssl_keyfile=keyfile,
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "the test app did not start"
        await asyncio.sleep(0.01)
    try:
        yield target
    finally:
        target.release.set()
        server.should_exit = True
        await task
        sock.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
