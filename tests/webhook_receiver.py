"""A real webhook receiver on port 0 (Starlette under uvicorn, in the test process): records every
POST and answers as the test tells it (status, Retry-After, Location, or hang until released)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class Hook:
    """One POST as received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """The running receiver: answers per path from `answers` (status, headers) and `bodies`, hangs on /hang."""

    port: int
    received: list[Hook] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)  # the answer's body per path (else "answer <status>")
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Hook]:
        return [h for h in self.received if h.path == path]


def _app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        got = Hook(request.url.path, {k.lower(): v for k, v in request.headers.items()}, await request.body())
        receiver.received.append(got)
        if request.url.path == "/hang":
            receiver.hanging += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(receiver.release.wait(), 60)
            finally:
                receiver.hanging -= 1
        status, headers = receiver.answers.get(request.url.path, (200, {}))
        body = receiver.bodies.get(request.url.path, f"answer {status}".encode())
        return PlainTextResponse(body, status_code=status, headers=headers)

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@contextlib.asynccontextmanager
async def serve_receiver() -> AsyncIterator[Receiver]:
    """Serve on 127.0.0.1, port 0, until the block ends."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    receiver = Receiver(port=sock.getsockname()[1])
    config = uvicorn.Config(_app(receiver), loop="none", lifespan="off", log_config=None, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "the receiver did not start"
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await task
        sock.close()
