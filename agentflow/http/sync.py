""":mod:`agentflow.http` for sync tools: the call runs on the worker's event loop (the
process's pool) and the calling thread waits for it.

    from agentflow.http import sync as http

    @tool
    def lookup(city: str) -> dict:
        return http.get("https://api.example.com/weather", params={"q": city}).json()

Not for code running on an event loop (it would wait on itself): there, ``await`` the
functions of :mod:`agentflow.http`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentflow import _aio
from agentflow.http import request as _request
from agentflow.http.client import Params
from agentflow.http.response import Response


def request(
    method: str,
    url: str,
    *,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | str | None = None,
    timeout: float | None = None,
) -> Response:
    """:func:`agentflow.http.request`, waited for from a thread without a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "agentflow.http.sync called on an event loop: await agentflow.http's functions"
        )
    return _aio.run(_request(method, url, params=params, headers=headers, json=json,
                             content=content, timeout=timeout))  # fmt: skip


def get(
    url: str,
    *,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """GET `url` (see :func:`agentflow.http.get`)."""
    return request("GET", url, params=params, headers=headers, timeout=timeout)


def post(
    url: str,
    *,
    json: Any = None,
    content: bytes | str | None = None,
    params: Params | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Response:
    """POST `json` (or `content`) to `url` (see :func:`agentflow.http.post`)."""
    return request("POST", url, params=params, headers=headers, json=json, content=content,
                   timeout=timeout)  # fmt: skip
