"""A pool of MCP client sessions per server, per worker process (official `mcp` SDK).

Each connection is a long-lived session held open by a task on the process's event loop
(the SDK's transports are context managers that must be entered and left in one task).
Calls go round-robin over healthy connections; a connection whose call fails, or that does
not answer a ping (every `health_interval`), is marked unhealthy, skipped and replaced. The
server's tool list is cached for `tools_ttl`. A server that cannot be reached gives
:class:`~agentflow.errors.MCPError` naming it and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentflow.config import MCPServerConfig, get_settings
from agentflow.errors import MCPError, ToolError

log = logging.getLogger("agentflow.mcp")


class _Connection:
    """One session, held open by its own task until closed."""

    def __init__(self, server: str, config: MCPServerConfig, index: int) -> None:
        self.server = server
        self.config = config
        self.index = index
        self.session: ClientSession | None = None
        self.healthy = False
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self._closing = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._hold())

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        c = self.config
        if c.transport == "stdio":
            if not c.command:
                raise MCPError(f"MCP server {self.server!r}: stdio needs `command`")
            params = StdioServerParameters(command=c.command, args=list(c.args),
                                           env={**os.environ, **c.env})  # fmt: skip
            # Celery swaps sys.stderr for a logging proxy without a file descriptor; the
            # server's stderr goes to the worker's original stderr instead.
            errlog = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
            async with stdio_client(params, errlog=errlog) as (read, write):
                yield read, write
        else:
            if not c.url:
                raise MCPError(f"MCP server {self.server!r}: http needs `url`")
            async with streamable_http_client(c.url) as (read, write, _session_id):
                yield read, write

    async def _hold(self) -> None:
        try:
            async with self._transport() as (read, write), ClientSession(read, write) as session:
                await asyncio.wait_for(session.initialize(), self.config.connect_timeout)
                self.session = session
                self.healthy = True
                self.ready.set()
                await self._closing.wait()
        except BaseException as exc:
            self.error = exc
        finally:
            self.healthy = False
            self.session = None
            self.ready.set()

    async def close(self) -> None:
        """End the session (and the server process, for stdio)."""
        self._closing.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 5)
        if not self.task.done():
            self.task.cancel()


class MCPPool:
    """The connections to one MCP server in this process."""

    def __init__(self, name: str, config: MCPServerConfig) -> None:
        self.name = name
        self.config = config
        self.connections: list[_Connection] = []
        self._next = itertools.count()
        self._lock = asyncio.Lock()
        self._tools: list[types.Tool] | None = None
        self.tools_fetched_at = 0.0
        self._health: asyncio.Task[None] | None = None
        self.replaced = 0

    def _reason(self) -> str:
        errors = [c.error for c in self.connections if c.error is not None]
        return f"{type(errors[-1]).__name__}: {_unwrap(errors[-1])}" if errors else "not connected"

    async def _fill(self) -> None:
        """Open connections up to `pool_size`, replacing unhealthy ones."""
        async with self._lock:
            keep = [c for c in self.connections if c.healthy or not c.ready.is_set()]
            dropped = [c for c in self.connections if c not in keep]
            for c in dropped:
                await c.close()
            self.replaced += len(dropped) if self.connections else 0
            fresh = [_Connection(self.name, self.config, i)
                     for i in range(len(keep), self.config.pool_size)]  # fmt: skip
            self.connections = keep + fresh
            if fresh:
                await asyncio.wait([asyncio.ensure_future(c.ready.wait()) for c in fresh],
                                   timeout=self.config.connect_timeout)  # fmt: skip
            if self._health is None or self._health.done():
                self._health = asyncio.get_running_loop().create_task(self._health_loop())

    async def _pick(self) -> _Connection:
        for attempt in range(2):
            healthy = [c for c in self.connections if c.healthy and c.session is not None]
            if healthy:
                return healthy[next(self._next) % len(healthy)]
            if attempt == 0:
                await self._fill()
        raise MCPError(f"MCP server {self.name!r} unreachable: {self._reason()}")

    async def call_tool(self, tool: str, args: dict[str, Any]) -> Any:
        """Call `tool` on the next healthy connection; its structured result or its text."""
        conn = await self._pick()
        assert conn.session is not None
        try:
            result = await asyncio.wait_for(conn.session.call_tool(tool, args),
                                            self.config.call_timeout)  # fmt: skip
        except TimeoutError:
            raise MCPError(f"MCP server {self.name!r}: {tool} timed out after "
                           f"{self.config.call_timeout:g}s") from None  # fmt: skip
        except Exception as exc:
            conn.healthy = False  # skipped from now on, replaced on the next fill
            conn.error = exc
            asyncio.get_running_loop().create_task(self._fill())
            raise MCPError(f"MCP server {self.name!r}: call to {tool} failed: "
                           f"{type(exc).__name__}: {_unwrap(exc)}") from exc  # fmt: skip
        text = "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))
        if result.isError:
            raise ToolError(f"MCP tool {self.name}/{tool} failed: {text}")
        if result.structuredContent is not None:
            structured = result.structuredContent
            if set(structured) == {"result"}:
                return structured["result"]
            return structured
        return text

    async def list_tools(self, refresh: bool = False) -> list[types.Tool]:
        """The server's tools, cached for `tools_ttl` seconds."""
        fresh = time.monotonic() - self.tools_fetched_at < self.config.tools_ttl
        if self._tools is not None and fresh and not refresh:
            return self._tools
        conn = await self._pick()
        assert conn.session is not None
        listed = await asyncio.wait_for(conn.session.list_tools(), self.config.call_timeout)
        self._tools = list(listed.tools)
        self.tools_fetched_at = time.monotonic()
        return self._tools

    async def check_health(self) -> int:
        """Ping every connection; replace those that do not answer. Returns how many are up."""
        for c in list(self.connections):
            if not c.healthy or c.session is None:
                continue
            try:
                await asyncio.wait_for(c.session.send_ping(), 5)
            except Exception as exc:
                c.healthy = False
                c.error = exc
        if any(not c.healthy for c in self.connections):
            await self._fill()
        return sum(1 for c in self.connections if c.healthy)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval)
            with contextlib.suppress(Exception):
                await self.check_health()

    async def aclose(self) -> None:
        """Close every connection."""
        if self._health is not None:
            self._health.cancel()
        for c in self.connections:
            await c.close()
        self.connections = []


def _unwrap(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap transport errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


_pools: dict[str, MCPPool] = {}
_pid: int | None = None


def get_pool(name: str) -> MCPPool:
    """This process's pool for the configured server `name` (call on the process loop)."""
    global _pid
    if _pid != os.getpid():
        _pools.clear()
        _pid = os.getpid()
    pool = _pools.get(name)
    if pool is None:
        servers = get_settings().mcp.servers
        if name not in servers:
            raise MCPError(f"no MCP server named {name!r} in [mcp] servers "
                           f"(configured: {sorted(servers)})")  # fmt: skip
        pool = _pools[name] = MCPPool(name, servers[name])
    return pool


async def aclose_all() -> None:
    """Close every pool of this process (worker shutdown)."""
    pools = list(_pools.values())
    _pools.clear()
    for pool in pools:
        await pool.aclose()
