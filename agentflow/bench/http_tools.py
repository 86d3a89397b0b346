"""The tools of workloads W2http and W2httpx: one GET to the mock server's ``/tool``.

Both wait `seconds` on the server (``?latency=``), as W2's ``sleep`` tool waits in the
process. ``bench_http`` calls through :mod:`agentflow.http`; ``bench_httpx`` is what a user
writes without it: one ``httpx.AsyncClient()`` per worker process, httpx's defaults.
The URL is the mock server's that ``[llm.openai] endpoint`` points at (the benchmark's
local cluster serves both), unless the call names one. Workers load this module through
``[agents] modules`` (the local cluster of ``agentflow benchmark --local`` does it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import httpx

from agentflow import http
from agentflow.config import get_settings
from agentflow.tools import tool


@lru_cache(maxsize=1)
def mock_tool_url() -> str:
    """``/tool`` on the server of ``[llm.openai] endpoint``."""
    endpoint = get_settings().llm.openai.endpoint or "http://127.0.0.1:8765/v1"
    return str(httpx.URL(endpoint).copy_with(path="/tool", query=None))


@tool("bench_http")
async def bench_http(seconds: float = 0.02, url: str | None = None) -> Any:
    """GET the mock's ``/tool``, which answers after `seconds`, with ``agentflow.http``."""
    response = await http.get(url or mock_tool_url(), params={"latency": f"{seconds}s"})
    return response.raise_for_status().json()["ok"]


_naive: httpx.AsyncClient | None = None


@tool("bench_httpx")
async def bench_httpx(seconds: float = 0.02, url: str | None = None) -> Any:
    """The same GET through one ``httpx.AsyncClient()`` per worker process (as users write
    it when AgentFlow gives them nothing)."""
    global _naive
    if _naive is None:
        _naive = httpx.AsyncClient()
    response = await _naive.get(url or mock_tool_url(), params={"latency": f"{seconds}s"})
    return response.raise_for_status().json()["ok"]
