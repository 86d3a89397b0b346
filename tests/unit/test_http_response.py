"""agentflow.http's Response and the rule for its sync functions (no server needed)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentflow.http import HTTPStatusError, Response
from agentflow.http import sync as http_sync


def _response(status: int, body: bytes, content_type: str = "application/json") -> Response:
    return Response(status, {"content-type": content_type}, body, "GET", "http://api/x")


def test_a_response_reads_like_httpxs() -> None:
    ok = _response(200, b'{"a": 1}')
    assert ok.is_success and ok.json() == {"a": 1} and ok.raise_for_status() is ok
    latin = _response(200, "é".encode("latin-1"), "text/plain; charset=latin-1")
    assert latin.text == "é"


def test_an_error_status_raises_an_httpx_error_naming_the_call() -> None:
    failed = _response(503, b"busy")
    assert not failed.is_success
    with pytest.raises(httpx.HTTPError) as caught:
        failed.raise_for_status()
    assert isinstance(caught.value, HTTPStatusError)
    assert caught.value.response is failed
    assert str(caught.value) == "503 from GET http://api/x: busy"


def test_the_sync_functions_refuse_to_run_on_an_event_loop() -> None:
    async def on_a_loop() -> None:
        http_sync.get("http://127.0.0.1:9/never")

    with pytest.raises(RuntimeError, match=r"await agentflow\.http"):
        asyncio.run(on_a_loop())
