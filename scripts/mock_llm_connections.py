#!/usr/bin/env python
"""Hold N concurrent keep-alive connections against the mock LLM and check none is dropped.

Usage::

    .venv/bin/python scripts/mock_llm_connections.py --connections 2000 --latency 200ms

Starts `agentflow mock-llm` as a child process (or uses ``--url``), opens N raw asyncio TCP
connections, sends one chat request on each at once (all N are in flight together: the
server's latency keeps them open), then a second request on every same connection (keep-alive
reuse). Prints one summary line and exits non-zero if any connection failed, was closed, or
the server never saw N requests in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx

from agentflow.mock_llm import start_mock_llm_process
from agentflow.mock_llm.server import raise_fd_limit

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _request(host: str, port: int) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + BODY


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
        if line.lower().startswith("connection:") and "close" in line.lower():
            raise ConnectionError("server closed keep-alive")
    await reader.readexactly(length)
    return status


async def _one(
    host: str, port: int, opened: list[int], start: asyncio.Event, again: asyncio.Event,
    answered: list[int],
) -> str:  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        opened.append(0)
        return f"connect: {exc}"
    opened.append(1)
    request = _request(host, port)
    try:
        await start.wait()
        status = await _exchange(reader, writer, request)
        answered.append(1)
        if status != 200:
            return f"status {status}"
        await again.wait()
        if (status := await _exchange(reader, writer, request)) != 200:
            return f"status {status} on reuse"
        return "ok"
    except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
        answered.append(0)
        return f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()


async def _run(url: str, n: int) -> tuple[list[str], float, float]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    start, again = asyncio.Event(), asyncio.Event()
    opened: list[int] = []
    answered: list[int] = []
    tasks = [
        asyncio.create_task(_one(host, int(port), opened, start, again, answered)) for _ in range(n)
    ]
    while len(opened) < n:  # every connection open before the first request goes out
        await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    while len(answered) < n and not all(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    again.set()  # the same N connections, reused
    results = await asyncio.gather(*tasks)
    return list(results), first, time.perf_counter() - t1


def main() -> int:
    """Run the check; exit 0 when every connection served both requests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--latency", default="200ms")
    parser.add_argument("--url", help="use a running mock LLM instead of starting one")
    args = parser.parse_args()
    raise_fd_limit(args.connections * 2 + 1024)
    server = None if args.url else start_mock_llm_process(port=0, latency=args.latency)
    url = args.url or (server.url if server else "")
    try:
        httpx.post(f"{url}/stats/reset", timeout=5)
        results, first, second = asyncio.run(_run(url, args.connections))
        stats = httpx.get(f"{url}/stats", timeout=5).json()
    finally:
        if server is not None:
            server.stop()
    failures = [r for r in results if r != "ok"]
    print(
        f"connections={args.connections} ok={len(results) - len(failures)} "
        f"failed={len(failures)} requests_seen={stats.get('chat', 0)} "
        f"max_in_flight={stats.get('max_in_flight')} round1={first:.2f}s round2={second:.2f}s"
    )
    for reason in sorted(set(failures))[:10]:
        print(f"  {failures.count(reason)} x {reason}")
    ok = not failures and stats.get("max_in_flight", 0) >= args.connections
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
