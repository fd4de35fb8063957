"""Helpers for driving the HTTPS API in tests: a real HttpServer on the test loop, a real httpx client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from relay.channels.http import HttpServer, build_app
from tests.conftest import LiveRelay, Tenant


@dataclass
class Api:
    """A live API server over a live relay, and a client for it."""

    relay: LiveRelay
    server: HttpServer
    client: httpx.AsyncClient

    @property
    def port(self) -> int:
        return self.server.port

    async def send(self, key: str | None, body: Any = None, *, content: bytes | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        """POST /v1/send with a bearer key (None: no Authorization header)."""
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        if content is None:
            content = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        return await self.client.post("/v1/send", content=content, headers=all_headers)

    async def get(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.client.get(path, headers=headers)


@contextlib.asynccontextmanager
async def serve_api(live: LiveRelay, *, certfile: str | None = None, keyfile: str | None = None,
                    verify: ssl.SSLContext | bool = True) -> AsyncIterator[Api]:
    """An HttpServer on port 0 over the relay's own pipeline, and an httpx client for it."""
    app = build_app(live.server.pipeline, hostname=live.cfg.smtp.hostname,
                    max_message_bytes=live.cfg.limits.max_message_bytes)
    server = HttpServer(app, shutdown_grace=2)
    await server.start("127.0.0.1", 0, certfile=certfile, keyfile=keyfile)
    scheme = "https" if certfile else "http"
    try:
        async with httpx.AsyncClient(base_url=f"{scheme}://127.0.0.1:{server.port}", timeout=15,
                                     verify=verify) as client:
            yield Api(live, server, client)
    finally:
        await server.stop(grace=2)


def body_for(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """A valid send body from the tenant's sender; keyword arguments replace or add fields."""
    body: dict[str, Any] = {"from": tenant.sender, "to": "rcpt@dest.test", "subject": "hello",
                            "text": "hello there"}
    body.update(fields)
    return body


def assert_failure(response: httpx.Response, status: int, code: str, error: str | None = None) -> dict[str, Any]:
    """The response is the failure envelope with this status and code (and exact error text)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["ok"] is False and doc["code"] == code, doc
    assert isinstance(doc["error"], str) and doc["error"], doc
    if error is not None:
        assert doc["error"] == error, doc
    assert set(doc) <= {"ok", "error", "code", "messageId"}, doc
    return doc


async def raw_http(port: int, head: str, body: bytes = b"", *,
                   timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Write a request (possibly incomplete) on a raw socket; read the response until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, payload
