"""Small POSTs to a local uvicorn app from httpx and from aiohttp: requests/s and client CPU per request."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp
import httpx

APP = '''
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def post(request):
    await request.body()
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/", post, methods=["POST"])])
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("app did not start")


async def _run(name: str, post: object, count: int, concurrency: int) -> tuple[float, float]:
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            await post()  # type: ignore[operator]

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return count / wall, cpu / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = _free_port()
    app_file = os.path.join(tempfile.mkdtemp(prefix="relay-bench-"), "_client_bench_app.py")
    with open(app_file, "w") as handle:
        handle.write(APP)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", os.path.dirname(app_file), "_client_bench_app:app",
         "--port", str(port), "--log-level", "warning", "--http", "httptools"])
    try:
        await _wait_listening(port)
        url = f"http://127.0.0.1:{port}/"
        body = b'{"envelope": {"to": "a@b.test"}, "plain": "' + b"x" * 2000 + b'"}'
        headers = {"content-type": "application/json"}
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits) as hx, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=100)) as ah:

            async def httpx_post() -> None:
                response = await hx.post(url, content=body, headers=headers)
                assert response.status_code == 200

            async def aiohttp_post() -> None:
                async with ah.post(url, data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200

            for _ in range(args.rounds):  # alternate so neither gets the warm machine
                for name, post in (("httpx", httpx_post), ("aiohttp", aiohttp_post)):
                    await _run(name, post, 200, args.concurrency)  # warm the pool
                    rate, cpu_us = await _run(name, post, args.count, args.concurrency)
                    print(f"{name:8s} {rate:8.0f} req/s   client CPU {cpu_us:6.0f} us/req "
                          f"({args.count} POSTs of {len(body)} B, {args.concurrency} concurrent)")
    finally:
        server.terminate()
        server.wait()
        os.unlink(app_file)
        os.rmdir(os.path.dirname(app_file))


if __name__ == "__main__":
    asyncio.run(main())
