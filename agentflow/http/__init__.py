"""A pooled HTTP client for tools: ``await agentflow.http.get(url)``.

Every call goes through one connection pool per worker process and event loop — the LLM
client's machinery (aiohttp's pool and C parser under httpx's exceptions, see
docs/internals.md) — made on first use, made again in a forked child, and closed at worker
shutdown. Limits, timeouts and retries come from ``[http]`` in agentflow.toml
(docs/tools.md, "Calling HTTP from a tool")::

    from agentflow import http, tool

    @tool
    async def weather(city: str) -> dict:
        response = await http.get("https://api.example.com/weather", params={"q": city})
        return response.raise_for_status().json()

Sync tools (they run on helper threads) use :mod:`agentflow.http.sync`, which runs the same
call on the worker's loop and waits for it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from agentflow import _aio
from agentflow.config import get_settings
from agentflow.http.client import HTTPClient, Params
from agentflow.http.response import HTTPStatusError, Response


class _Clients:
    """This process's clients, one per event loop (a closed loop's is dropped)."""

    def __init__(self) -> None:
        self.by_loop: dict[int, tuple[asyncio.AbstractEventLoop, HTTPClient]] = {}

    def get(self, loop: asyncio.AbstractEventLoop) -> HTTPClient:
        entry = self.by_loop.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        for key, (other, old) in list(self.by_loop.items()):
            if other.is_closed():  # a finished asyncio.run(): nothing to await there
                del self.by_loop[key]
                old.transport.discard()
        made = HTTPClient(get_settings().http)
        self.by_loop[id(loop)] = (loop, made)
        return made


_registries: dict[tuple[int, str], _Clients] = {}
_last: tuple[int, asyncio.AbstractEventLoop, HTTPClient] | None = None


def client() -> HTTPClient:
    """The calling event loop's client in this process (made on first use); call on a loop."""
    global _last
    loop = asyncio.get_running_loop()
    last, pid = _last, os.getpid()
    if last is not None and last[1] is loop and last[0] == pid:
        return last[2]
    made = _aio.per_process(_registries, "http", _Clients).get(loop)
    _last = (pid, loop, made)
    return made


def httpx_client() -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on the calling loop's pool (same limits and connections), for
    httpx's full API or a library that takes a client. Do not close it; the worker does."""
    return client().httpx_client()


async def request(
    method: str,
    url: str,
    *,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | str | None = None,
    timeout: float | None = None,
) -> Response:
    """Send a request on the pool and read the whole reply (see :meth:`HTTPClient.request`)."""
    return await client().request(method, url, params=params, headers=headers, json=json,
                                  content=content, timeout=timeout)  # fmt: skip


async def get(
    url: str,
    *,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """GET `url` (retried after a connection error or a 502/503/504)."""
    return await client().request("GET", url, params=params, headers=headers, timeout=timeout)


async def post(
    url: str,
    *,
    json: Any = None,
    content: bytes | str | None = None,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """POST `json` (or `content`) to `url` (retried only when it never left)."""
    return await client().request("POST", url, params=params, headers=headers, json=json,
                                  content=content, timeout=timeout)  # fmt: skip


async def put(
    url: str,
    *,
    json: Any = None,
    content: bytes | str | None = None,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """PUT `json` (or `content`) to `url` (idempotent: retried like GET)."""
    return await client().request("PUT", url, params=params, headers=headers, json=json,
                                  content=content, timeout=timeout)  # fmt: skip


async def delete(
    url: str,
    *,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """DELETE `url` (idempotent: retried like GET)."""
    return await client().request("DELETE", url, params=params, headers=headers,
                                  timeout=timeout)  # fmt: skip


async def aclose_all() -> None:
    """Close this process's clients (worker shutdown); later calls make new ones."""
    global _last
    _last = None
    clients = _registries.pop((os.getpid(), "http"), None)
    if clients is None:
        return
    await asyncio.gather(*(c.aclose() for _, c in clients.by_loop.values()),
                         return_exceptions=True)  # fmt: skip


__all__ = [
    "HTTPClient",
    "HTTPStatusError",
    "Response",
    "aclose_all",
    "client",
    "delete",
    "get",
    "httpx_client",
    "post",
    "put",
    "request",
]
