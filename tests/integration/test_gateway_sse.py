"""`GET /v1/events/{id}/stream`: Server-Sent Events from a real gateway and real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway_server import ALL_KEY, ECHO_KEY, GatewayProcess, auth

pytestmark = pytest.mark.integration
FINAL = ("result", "failed", "cancelled")


def sse(response: httpx.Response) -> Iterator[dict]:
    """Parsed SSE messages ({"id", "event", "data"}) of a streaming response."""
    message: dict = {}
    for line in response.iter_lines():
        if not line:
            if "event" in message:
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            message[field] = json.loads(value) if field == "data" else value


def emit(gw: GatewayProcess, body: dict) -> str:
    r = httpx.post(f"{gw.url}/v1/events", headers=auth(ALL_KEY), json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def read(gw: GatewayProcess, event_id: str, *, last: str | None = None,
         stop: str | None = None) -> list[dict]:  # fmt: skip
    """Messages up to the final one (or up to the first `stop` event, then disconnect)."""
    headers = {**auth(ALL_KEY), **({"Last-Event-ID": last} if last else {})}
    out: list[dict] = []
    with httpx.stream("GET", f"{gw.url}/v1/events/{event_id}/stream", headers=headers,
                      timeout=60) as r:  # fmt: skip
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for message in sse(r):
            out.append(message)
            if message["event"] in FINAL or message["event"] == stop:
                break
    return out


def test_tokens_tool_rows_and_the_result_arrive_in_order(gateway, start_worker) -> None:
    start_worker(concurrency=8)
    event_id = emit(gateway, {"type": "ask", "agent": "narrator",
                              "data": {"tools": 3, "words": 6}})  # fmt: skip
    messages = read(gateway, event_id)
    kinds = [m["event"] for m in messages]
    assert kinds == ["token"] * 3 + ["tool_call"] * 3 + ["tool_result"] * 3 + ["token"] * 6 + [
        "result"]  # fmt: skip
    assert [m["data"] for m in messages[:3]] == ["Looking ", "into ", "it. "]
    calls = [m["data"]["id"] for m in messages[3:6]]
    assert [m["data"]["id"] for m in messages[6:9]] == calls
    assert all(m["data"]["output"] == 0.05 for m in messages[6:9])
    assert [m["data"] for m in messages[9:15]] == [f"w{k} " for k in range(6)]
    final = messages[-1]
    assert final["id"] == "end"
    assert final["data"]["result"]["output"] == {"answer": "w0 w1 w2 w3 w4 w5", "tools": 3}
    ids = [tuple(map(int, m["id"].split("-"))) for m in messages[:-1]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_client_resumes_with_last_event_id(gateway, start_worker) -> None:
    start_worker(concurrency=8)
    event_id = emit(gateway, {"type": "ask", "agent": "narrator", "data": {"tools": 2}})
    first = read(gateway, event_id, stop="tool_call")
    rest = read(gateway, event_id, last=first[-1]["id"])
    whole = read(gateway, event_id)  # a new reader still gets everything: nothing is trimmed
    assert [m["id"] for m in first + rest] == [m["id"] for m in whole]
    assert rest[-1]["event"] == "result"
    with httpx.stream("GET", f"{gateway.url}/v1/events/{event_id}/stream",
                      headers={**auth(ALL_KEY), "Last-Event-ID": "end"}) as r:  # fmt: skip
        assert r.status_code == 204
    bad = httpx.get(f"{gateway.url}/v1/events/{event_id}/stream",
                    headers={**auth(ALL_KEY), "Last-Event-ID": "yesterday"})  # fmt: skip
    assert bad.status_code == 422
    # The reader that hung up mid-stream let go of its stream: none is open now.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{gateway.url}/metrics", headers=auth(ALL_KEY)).text
        if "\nagentflow_gateway_open_streams 0.0\n" in text:
            break
        time.sleep(0.1)
    assert "\nagentflow_gateway_open_streams 0.0\n" in text


def test_cancel_ends_the_stream_with_a_cancelled_marker(gateway, start_worker) -> None:
    start_worker(concurrency=8)
    event_id = emit(gateway, {"type": "ask", "agent": "narrator",
                              "data": {"tools": 2, "seconds": 60}})  # fmt: skip
    headers = auth(ALL_KEY)
    seen: list[str] = []
    with httpx.stream("GET", f"{gateway.url}/v1/events/{event_id}/stream", headers=headers,
                      timeout=60) as r:  # fmt: skip
        for message in sse(r):
            seen.append(message["event"])
            if message["event"] == "tool_call" and seen.count("tool_call") == 2:
                cancel = httpx.delete(f"{gateway.url}/v1/events/{event_id}", headers=headers)
                assert cancel.status_code == 202
            if message["event"] in FINAL:
                break
    assert seen[-1] == "cancelled"
    assert "tool_result" not in seen


def test_a_failed_event_ends_its_stream_with_the_reason(gateway, start_worker) -> None:
    start_worker()
    event_id = emit(gateway, {"type": "t", "agent": "boom", "data": {"why": "no tokens"}})
    messages = read(gateway, event_id)
    assert [m["event"] for m in messages] == ["failed"]
    assert "no tokens" in messages[0]["data"]["error"]


def test_an_event_that_streams_nothing_still_ends_with_its_result(gateway, start_worker) -> None:
    start_worker()
    event_id = emit(gateway, {"type": "t", "agent": "echo", "data": {"a": 1}})
    messages = read(gateway, event_id)
    assert [m["event"] for m in messages] == ["result"]
    assert messages[0]["data"]["result"]["output"]["echo"] == {"a": 1}


def test_streams_are_scoped_to_the_key(gateway) -> None:
    event_id = emit(gateway, {"type": "t", "agent": "narrator"})
    url = f"{gateway.url}/v1/events/{event_id}/stream"
    assert httpx.get(url, headers=auth(ECHO_KEY)).status_code == 403
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"{gateway.url}/v1/events/nope/stream",
                     headers=auth(ALL_KEY)).status_code == 404  # fmt: skip
