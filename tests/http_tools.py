"""Tools that call HTTP through agentflow.http, for tests/integration/test_http_tools.py."""

from __future__ import annotations

from typing import Any

import httpx

from agentflow import http, tool
from agentflow.http import sync as http_sync


def _reply(response: http.Response) -> dict[str, Any]:
    return {"status": response.status_code, "json": response.json()}


@tool("http_get")
async def http_get(url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    """GET `url` on the worker's pool."""
    return _reply(await http.get(url, params=params))


@tool("http_post")
async def http_post(url: str, payload: Any = None) -> dict[str, Any]:
    """POST `payload` as JSON."""
    return _reply(await http.post(url, json=payload))


@tool("http_get_sync")
def http_get_sync(url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    """GET `url` from a sync tool (a helper thread)."""
    return _reply(http_sync.get(url, params=params))


@tool("http_get_timeout")
async def http_get_timeout(url: str, timeout: float) -> dict[str, Any]:
    """GET with a per-call timeout; a timeout is reported, not raised."""
    try:
        return _reply(await http.get(url, timeout=timeout))
    except httpx.TimeoutException as exc:
        return {"timeout": type(exc).__name__}


@tool("http_via_httpx")
async def http_via_httpx(url: str) -> dict[str, Any]:
    """GET through the httpx.AsyncClient on the same pool."""
    response = await http.httpx_client().get(url)
    return {"status": response.status_code, "json": response.json()}
