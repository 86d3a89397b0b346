"""The mock LLM's replies, scripting and fault injection, through Starlette's TestClient."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from agentflow.mock_llm import MockOptions, create_app
from agentflow.mock_llm.app import script_rounds

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]


@pytest.fixture
def options() -> MockOptions:
    return MockOptions(latency=0.0)


@pytest.fixture
def client(options: MockOptions) -> Iterator[TestClient]:
    with TestClient(create_app(options)) as c:
        yield c


def chat(client: TestClient, messages: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": messages, **body}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_chat_echoes_the_last_user_message_with_usage(client: TestClient) -> None:
    reply = chat(client, [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "hello there"}])  # fmt: skip
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "mock: hello there"}
    assert choice["finish_reason"] == "stop"
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply == {**chat(client, [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "hello there"}]),
                     "id": reply["id"], "created": reply["created"]}  # fmt: skip


def test_scripted_tool_calls_then_a_final_answer(client: TestClient) -> None:
    user = {"role": "user", "content": 'find it\nCALL lookup {"id": 7}\nCALL search {"q": "x"}'}
    first = chat(client, [user], tools=TOOLS)["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    calls = first["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("lookup", {"id": 7}), ("search", {"q": "x"})]  # fmt: skip
    answered = [user, first["message"]] + [
        {"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"}
        for i, c in enumerate(calls)
    ]
    final = chat(client, answered, tools=TOOLS)["choices"][0]
    assert final["finish_reason"] == "stop"
    assert final["message"]["content"] == "mock: tool results: result 0 | result 1"


def test_then_lines_script_several_rounds(client: TestClient) -> None:
    user = {"role": "user", "content": 'CALL a {}\nTHEN\nCALL b {"n": 2}'}
    messages: list[dict[str, Any]] = [user]
    names = []
    for _ in range(3):
        choice = chat(client, messages, tools=TOOLS)["choices"][0]
        if choice["finish_reason"] != "tool_calls":
            break
        calls = choice["message"]["tool_calls"]
        names.append([c["function"]["name"] for c in calls])
        messages += [choice["message"]] + [
            {"role": "tool", "tool_call_id": c["id"], "content": c["function"]["name"] + "!"}
            for c in calls
        ]
    assert names == [["a"], ["b"]]
    assert choice["message"]["content"] == "mock: tool results: a! | b!"


def test_directives_without_tools_are_plain_text(client: TestClient) -> None:
    reply = chat(client, [{"role": "user", "content": "CALL lookup {}"}])
    assert reply["choices"][0]["message"]["content"] == "mock: CALL lookup {}"


def test_script_rounds_parses_lines() -> None:
    text = 'intro\n  CALL a.b {"x": [1, 2]}\nCALL c\nthen\nCALL d {}\nnot a CALL e'
    assert script_rounds(text) == [[("a.b", '{"x": [1, 2]}'), ("c", "{}")], [("d", "{}")]]


def test_embeddings_are_deterministic_one_per_input(client: TestClient) -> None:
    body = {"model": "e", "input": ["alpha", "beta", "alpha"]}
    data = client.post("/v1/embeddings", json=body).json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert data[0]["embedding"] == data[2]["embedding"] != data[1]["embedding"]
    single = client.post("/v1/embeddings", json={"input": "alpha"}).json()["data"]
    assert single[0]["embedding"] == data[0]["embedding"]


def test_azure_paths_require_api_version(client: TestClient) -> None:
    path = "/openai/deployments/gpt4o/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post(path, json=body).status_code == 400
    reply = client.post(path + "?api-version=2024-06-01", json=body).json()
    assert reply["model"] == "gpt4o"
    assert reply["choices"][0]["message"]["content"] == "mock: hi"
    emb = "/openai/deployments/emb/embeddings"
    assert client.post(emb, json={"input": ["x"]}).status_code == 400
    assert len(client.post(emb + "?api-version=1", json={"input": ["x"]}).json()["data"]) == 1


def test_ollama_chat_and_embed(client: TestClient) -> None:
    reply = client.post("/api/chat", json={"model": "llama3.1", "messages": [
        {"role": "user", "content": "CALL lookup {\"id\": 1}"}], "tools": TOOLS}).json()  # fmt: skip
    assert reply["done"] is True
    assert reply["message"]["tool_calls"] == [
        {"function": {"name": "lookup", "arguments": {"id": 1}}}
    ]
    embed = client.post("/api/embed", json={"model": "e", "input": ["a", "b"]}).json()
    assert len(embed["embeddings"]) == 2


def test_per_request_status_and_retry_after(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    response = client.post("/v1/chat/completions", json=body,
                           headers={"x-mock-status": "429", "x-mock-retry-after": "3"})  # fmt: skip
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert client.post("/v1/chat/completions", json=body,
                       headers={"x-mock-status": "503"}).status_code == 503  # fmt: skip


def test_every_nth_request_is_rate_limited(options: MockOptions, client: TestClient) -> None:
    options.rate_limit_every = 3
    options.retry_after = 2.0
    body = {"messages": [{"role": "user", "content": "x"}]}
    codes = [client.post("/v1/chat/completions", json=body) for _ in range(6)]
    assert [r.status_code for r in codes] == [200, 200, 429, 200, 200, 429]
    assert codes[2].headers["retry-after"] == "2"


def test_error_rate_and_stats(options: MockOptions, client: TestClient) -> None:
    options.error_rate = 1.0
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 500
    client.post("/v1/embeddings", json={"input": "x"})
    stats = client.get("/stats").json()
    assert stats["chat"] == 1 and stats["embeddings"] == 1 and stats["total"] == 2
    assert stats["status_500"] == 2
    client.post("/stats/reset")
    assert client.get("/stats").json()["total"] == 0
