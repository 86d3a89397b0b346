"""Client CPU per GET to the mock server's ``/tool`` (20 ms), many in flight, by client.

Starts the mock server as a child process (its CPU is not counted), then sends `calls` GETs,
`in_flight` at a time, on uvloop, through each client named on the command line:

- ``agentflow``: ``await agentflow.http.get(...)`` (the pooled client tools get);
- ``agentflow-httpx``: ``agentflow.http.httpx_client()`` (httpx's API on the same pool);
- ``httpx``: one ``httpx.AsyncClient()`` with httpx's defaults (timeout raised to 60 s so
  that its pool's waits do not fail), as tool code is usually written.

Prints calls/s and this process's CPU time per call.

    .venv/bin/python scripts/http_client_cpu.py [--calls 3000] [--in-flight 300] [kind ...]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import uvloop

from agentflow import http
from agentflow.mock_llm import start_mock_llm_process

KINDS = ("agentflow", "agentflow-httpx", "httpx")


async def measure(kind: str, url: str, calls: int, in_flight: int) -> str:
    """Run `calls` GETs through `kind`; one line of results."""
    naive = httpx.AsyncClient(timeout=60) if kind == "httpx" else None
    gate = asyncio.Semaphore(in_flight)
    params = {"latency": "20ms"}

    async def one() -> Any:
        async with gate:
            if naive is not None:
                return (await naive.get(url, params=params)).raise_for_status().json()
            if kind == "agentflow-httpx":
                reply = await http.httpx_client().get(url, params=params)
                return reply.raise_for_status().json()
            return (await http.get(url, params=params)).raise_for_status().json()

    await asyncio.gather(*(one() for _ in range(min(calls, in_flight))))  # connections open
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if naive is not None:
        await naive.aclose()
    await http.aclose_all()
    return f"{kind}: {calls / wall:.0f} calls/s, client CPU {cpu * 1e6 / calls:.0f} µs/call"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=300)
    args = parser.parse_args()
    mock = start_mock_llm_process(latency="50ms")
    try:
        for kind in args.kinds:
            line = uvloop.run(measure(kind, f"{mock.url}/tool", args.calls, args.in_flight))
            print(line, flush=True)
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
