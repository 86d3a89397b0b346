"""Azure OpenAI and Ollama dialects over real HTTP against the mock server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow.config import load_settings
from agentflow.llm.client import LLMClient
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration


def call(provider: str, config: dict[str, Any], coro: Any) -> Any:
    settings = load_settings(llm={"provider": provider, provider: config})

    async def go() -> Any:
        client = LLMClient(provider, settings=settings)
        try:
            return await coro(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_azure_chat_and_embeddings(mock_llm: MockServer, redis_client) -> None:
    config = {"endpoint": mock_llm.url, "deployment": "gpt4o-prod", "api_key": "az-key"}

    async def use(client: LLMClient) -> Any:
        reply = await client.chat([{"role": "user", "content": "hello azure"}], cache=False)
        vectors = await client.embed(["a", "b"])
        return reply, vectors

    reply, vectors = call("azure", config, use)
    assert reply.content == "mock: hello azure"
    assert len(vectors) == 2
    stats = mock_llm.stats()
    assert stats["azure_chat"] == 1 and stats["azure_embeddings"] == 1


def test_ollama_chat_tool_calls_and_embeddings(mock_llm: MockServer, redis_client) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]

    async def use(client: LLMClient) -> Any:
        reply = await client.chat([{"role": "user", "content": 'CALL lookup {"id": 7}'}],
                                  tools=tools, cache=False)  # fmt: skip
        vectors = await client.embed(["x"])
        return reply, vectors

    reply, vectors = call("ollama", {"endpoint": mock_llm.url, "model": "llama3.1"}, use)
    assert [(c.name, c.args) for c in reply.tool_calls] == [("lookup", {"id": 7})]
    assert reply.usage.llm_calls == 1
    assert len(vectors) == 1
    assert mock_llm.stats()["ollama_chat"] == 1


def test_openai_scripted_tool_calls(mock_llm: MockServer, redis_client) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]

    async def use(client: LLMClient) -> Any:
        msgs = [{"role": "user", "content": 'CALL search {"q": "celery"}'}]
        return await client.chat(msgs, tools=tools, cache=False)

    reply = call("openai", {"endpoint": mock_llm.url + "/v1"}, use)
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls[0].name == "search" and reply.tool_calls[0].args == {"q": "celery"}
