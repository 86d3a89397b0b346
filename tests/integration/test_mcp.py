"""MCP tools over stdio and streamable HTTP, with the example server that ships."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow import Client
from agentflow.config import load_settings
from agentflow.errors import MCPError
from agentflow.mcp.pool import MCPPool

pytestmark = pytest.mark.integration
STDIO = {"transport": "stdio", "command": sys.executable,
         "args": ["-m", "agentflow.mcp.example_server"]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentflow.mcp.example_server", "--transport", "http",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


def mcp_env(**servers: dict[str, Any]) -> dict[str, str]:
    return {"AGENTFLOW_MCP__SERVERS": json.dumps(servers)}


def call_tools(client: Client, *calls: dict[str, Any]) -> list[dict[str, Any]]:
    handle = client.emit({"type": "t", "agent": "tools", "data": {"calls": list(calls)}})
    return list(handle.result(timeout=60).output["results"])


def test_mcp_round_trip_over_stdio(start_worker, client: Client) -> None:
    worker = start_worker(env=mcp_env(calc=STDIO))
    results = call_tools(client, {"name": "calc__add", "args": {"a": 2, "b": 3}},
                         {"name": "calc__echo", "args": {"text": "over stdio"}})  # fmt: skip
    assert [r["output"] for r in results] == [5.0, "over stdio"]
    assert "calc__add" in worker.log()  # listed and registered at start


def test_mcp_round_trip_over_http(start_worker, client: Client, http_server: str) -> None:
    start_worker(env=mcp_env(web={"transport": "http", "url": http_server}))
    results = call_tools(client, {"name": "web__add", "args": {"a": 40, "b": 2}})
    assert results[0]["output"] == 42.0 and results[0]["error"] is None


def test_a_server_that_is_down_gives_a_clear_error(start_worker, client: Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    start_worker(env=mcp_env(gone={"transport": "http", "url": url, "connect_timeout": "2s"}))
    results = call_tools(client, {"name": "gone__add", "args": {"a": 1, "b": 1}})
    assert "MCP server 'gone' unreachable" in results[0]["error"]


def test_pool_round_robin_skips_and_replaces_a_dead_connection() -> None:
    settings = load_settings(mcp={"servers": {"calc": {**STDIO, "pool_size": 2}}})
    config = settings.mcp.servers["calc"]

    async def scenario() -> tuple[set[int], int, list[Any], int, float, float]:
        pool = MCPPool("calc", config)
        try:
            pids = {int(await pool.call_tool("whoami", {})) for _ in range(4)}
            fetched = (await pool.list_tools(), pool.tools_fetched_at)
            again = (await pool.list_tools(), pool.tools_fetched_at)
            victim = pids.pop()
            os.kill(victim, signal.SIGKILL)  # one server process dies under its connection
            answers = []
            for _ in range(4):
                try:
                    answers.append(int(await pool.call_tool("whoami", {})))
                except MCPError as exc:
                    answers.append(str(exc))
            await pool.check_health()
            after = {int(await pool.call_tool("whoami", {})) for _ in range(4)}
            return ({victim, *pids}, victim, answers, len(after - {victim}), fetched[1],
                    again[1])  # fmt: skip
        finally:
            await pool.aclose()

    first, victim, answers, alive_after, t1, t2 = asyncio.run(scenario())
    assert len(first) == 2  # two connections, two server processes, round robin
    assert t1 == t2  # the tool list came from the cache the second time
    assert victim not in [a for a in answers if isinstance(a, int)]  # dead one skipped
    assert sum(isinstance(a, int) for a in answers) >= 3  # at most one call saw it die
    assert alive_after >= 1
