"""CPU per LLM-style JSON POST through each HTTP client stack AgentFlow could use.

Runs an aiohttp server in the same process and sends 4,000 POSTs, 100 in flight, through:
httpx's own transport, httpx-aiohttp's transport (when ``pip install httpx-aiohttp`` put it
there), AgentFlow's aiohttp transport through ``httpx.AsyncClient``, and that transport's
``post_json`` (the hot path of every LLM call). Prints the process's CPU time per call
(client and server together: compare the rows, not the absolute figures).

    .venv/bin/python scripts/llm_transport_cpu.py [kind ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

from agentflow.llm._aiohttp_transport import AiohttpTransport

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 500}]}).encode()
REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "y" * 300}}]})
CALLS, IN_FLIGHT = 4000, 100
KINDS = ("httpx", "httpx-aiohttp", "agentflow-httpx", "agentflow-post_json")


async def _serve() -> tuple[web.AppRunner, int]:
    async def reply(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat", reply)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _drive(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one() for _ in range(200)))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CALLS)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(kind: str) -> str:
    """One row: CPU µs per call and calls/s for `kind`."""
    runner, port = await _serve()
    url = f"http://127.0.0.1:{port}/v1/chat"
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    headers = {"content-type": "application/json", "authorization": "Bearer k"}
    closers: list[Callable[[], Awaitable[Any]]] = []
    if kind == "agentflow-post_json":
        transport = AiohttpTransport(limits)
        timeouts = transport.timeouts(httpx.Timeout(30).as_dict())

        async def call() -> Any:
            _, body, _ = await transport.post_json(url, BODY, headers, timeouts)
            return json.loads(body)

        closers.append(transport.aclose)
    else:
        if kind == "httpx":
            client = httpx.AsyncClient(limits=limits)
        elif kind == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport as LibraryTransport

            client = httpx.AsyncClient(transport=LibraryTransport(limits=limits))
        else:
            client = httpx.AsyncClient(transport=AiohttpTransport(limits))

        async def call() -> Any:
            return (await client.post(url, content=BODY, headers=headers)).json()

        closers.append(client.aclose)
    try:
        cpu, wall = await _drive(call)
    finally:
        for close in closers:
            await close()
        await runner.cleanup()
    return f"{kind:20s} {cpu / CALLS * 1e6:6.0f} µs CPU/call  {CALLS / wall:6.0f} calls/s"


def main() -> None:
    """Measure each kind named on the command line (default: all) in a fresh loop."""
    for kind in sys.argv[1:] or KINDS:
        try:
            print(asyncio.run(measure(kind)), flush=True)
        except ModuleNotFoundError as exc:
            print(f"{kind:20s} skipped: {exc.name} is not installed")


if __name__ == "__main__":
    main()
