"""The mock LLM over real loopback HTTP: SSE, tool-call scripting, 429s, counters, processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.mock_llm import MockServer, start_mock_llm_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]


def post(server: MockServer, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=10, **kw)


def test_streamed_chat_matches_the_plain_reply(mock_llm: MockServer) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "stream these four words"}]}
    plain = post(mock_llm, "/v1/chat/completions", body).json()
    pieces, finish, usage, done = [], None, None, False
    with httpx.stream("POST", mock_llm.url + "/v1/chat/completions",
                      json={**body, "stream": True}, timeout=10) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            choice = chunk["choices"][0]
            pieces.append(choice["delta"].get("content") or "")
            finish = choice["finish_reason"] or finish
            usage = chunk.get("usage") or usage
    assert done and finish == "stop"
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]
    assert len([p for p in pieces if p]) == 5  # "mock:" + four words, one chunk each
    assert usage == plain["usage"]


def test_streamed_tool_calls(mock_llm: MockServer) -> None:
    body = {"messages": [{"role": "user", "content": 'CALL lookup {"id": 3}'}],
            "tools": TOOLS, "stream": True}  # fmt: skip
    text = post(mock_llm, "/v1/chat/completions", body).text
    chunks = [json.loads(x[6:]) for x in text.split("\n\n") if x.startswith("data: {")]
    calls = [c for ch in chunks for c in ch["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("lookup", '{"id": 3}')]  # fmt: skip
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_an_agent_loop_over_http(mock_llm: MockServer) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": 'CALL lookup {"id": 1}\nCALL lookup {"id": 2}'}]  # fmt: skip
    for _step in range(4):
        choice = post(mock_llm, "/v1/chat/completions",
                      {"messages": messages, "tools": TOOLS}).json()["choices"][0]  # fmt: skip
        if choice["finish_reason"] == "stop":
            break
        messages.append(choice["message"])
        for call in choice["message"]["tool_calls"]:
            args = json.loads(call["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": f"item {args['id']}"})  # fmt: skip
    assert choice["message"]["content"] == "mock: tool results: item 1 | item 2"
    assert mock_llm.stats()["chat"] == 2


def test_429_with_retry_after_every_n_and_per_request(mock_llm: MockServer) -> None:
    httpx.post(mock_llm.url + "/config", json={"rate_limit_every": 2, "retry_after": "2s"},
               timeout=5).raise_for_status()  # fmt: skip
    body = {"messages": [{"role": "user", "content": "x"}]}
    first, second = (post(mock_llm, "/v1/chat/completions", body) for _ in range(2))
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.headers["retry-after"] == "2"
    assert "error" in second.json()
    scripted = post(mock_llm, "/v1/chat/completions", body,
                    headers={"x-mock-status": "429", "x-mock-retry-after": "7"})  # fmt: skip
    assert scripted.status_code == 429 and scripted.headers["retry-after"] == "7"
    stats = mock_llm.stats()
    assert stats["status_429"] == 2 and stats["chat"] == 3


def test_counters_per_path_and_reset(mock_llm: MockServer) -> None:
    chat = {"messages": [{"role": "user", "content": "x"}]}
    post(mock_llm, "/v1/chat/completions", chat)
    post(mock_llm, "/openai/deployments/d1/chat/completions?api-version=2024-06-01", chat)
    post(mock_llm, "/v1/embeddings", {"input": ["a", "b", "c"]})
    post(mock_llm, "/api/chat", chat)
    post(mock_llm, "/api/embed", {"input": "a"})
    stats = mock_llm.stats()
    assert {k: stats[k] for k in ("chat", "azure_chat", "embeddings", "ollama_chat",
                                  "ollama_embed", "total", "embedding_inputs")} == {
        "chat": 1, "azure_chat": 1, "embeddings": 1, "ollama_chat": 1, "ollama_embed": 1,
        "total": 5, "embedding_inputs": 4}  # fmt: skip
    mock_llm.reset_stats()
    assert mock_llm.stats()["total"] == 0


def test_the_cli_process_serves_with_injected_latency() -> None:
    server = start_mock_llm_process(port=0, latency="20ms", rate_limit_every=3)
    try:
        body = {"messages": [{"role": "user", "content": "hello"}]}
        codes = [post(server, "/v1/chat/completions", body).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert httpx.get(server.url + "/health", timeout=5).json() == {"ok": True}
    finally:
        server.stop()
    assert server._process is not None and server._process.returncode is not None


def test_two_thousand_keep_alive_connections() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mock_llm_connections.py"),
         "--connections", "2000", "--latency", "200ms"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok=2000 failed=0" in result.stdout
