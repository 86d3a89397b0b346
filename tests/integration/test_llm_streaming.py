"""Token streaming: SSE from the provider, chunks through Redis Streams to `handle.stream()`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from agentflow import Client
from agentflow._redis.connection import get_redis
from agentflow.config import load_settings
from agentflow.llm.client import LLMClient
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration
PROMPT = "tell me about streams in redis please"


def test_a_streamed_chat_publishes_its_tokens(mock_llm: MockServer, redis_client) -> None:
    from agentflow.streams import iter_stream

    settings = load_settings(llm={"provider": "openai",
                                  "openai": {"endpoint": mock_llm.url + "/v1"}})  # fmt: skip
    stream_id = uuid.uuid4().hex

    async def go() -> Any:
        client = LLMClient("openai", settings=settings)
        try:
            return await client.chat([{"role": "user", "content": PROMPT}], stream_to=stream_id,
                                      cache=False)  # fmt: skip
        finally:
            await client.aclose()

    reply = asyncio.run(go())
    pieces = list(iter_stream(get_redis(), stream_id, timeout=10))
    assert "".join(pieces) == reply.content == "mock: " + PROMPT
    assert len(pieces) == len(reply.content.split(" "))  # one piece per streamed word
    assert reply.usage.total_tokens > 0 and reply.usage.llm_calls == 1
    assert mock_llm.stats()["chat"] == 1


def test_chat_agent_streams_to_the_producer_while_it_runs(
    start_worker, mock_llm: MockServer, redis_client
) -> None:
    httpx.post(mock_llm.url + "/config", json={"stream_chunk_delay": "60ms"}, timeout=5)
    start_worker(env={"AGENTFLOW_LLM__PROVIDER": "openai",
                      "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1"})  # fmt: skip
    client = Client()
    try:
        handle = client.emit({"type": "q", "agent": "chat",
                              "data": {"prompt": PROMPT, "stream": True}})  # fmt: skip
        pieces: list[str] = []
        ready_at_first_piece = None
        for piece in handle.stream(timeout=30):
            if ready_at_first_piece is None:
                ready_at_first_piece = handle.ready()
            pieces.append(piece)
        result = handle.result(timeout=30)
    finally:
        client.close()
    assert "".join(pieces) == result.output["content"] == "mock: " + PROMPT
    assert ready_at_first_piece is False  # the first token arrived before the event finished
