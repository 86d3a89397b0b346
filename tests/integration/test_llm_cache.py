"""Response cache details over real HTTP and Redis: failed leaders, TTLs per agent and kind."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agentflow.config import Settings, load_settings
from agentflow.errors import LLMUnavailable
from agentflow.llm.cache import request_key
from agentflow.llm.client import LLMClient
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration
MSGS = [{"role": "user", "content": "same"}]


def settings_for(mock: MockServer, llm: dict[str, Any] | None = None, **openai: Any) -> Settings:
    config = {"endpoint": mock.url + "/v1", "retry_initial_interval": 0.05, **openai}
    return load_settings(llm={"provider": "openai", "openai": config, **(llm or {})})


def test_followers_of_a_failed_leader_fail_with_it(mock_llm: MockServer, redis_client) -> None:
    """10 identical requests while the provider is down: one retry sequence, not ten.

    Each attempt takes 500 ms, so every follower looks before the leader gives up even on a
    loaded machine (a request that first looks after the failure is a new one, and calls).
    """
    httpx.post(mock_llm.url + "/config", timeout=5,
               json={"latency": "500ms", "fail_next": 100, "fail_status": 503,
                     "retry_after": "50ms"})  # fmt: skip
    settings = settings_for(mock_llm, retry_max_attempts=2, breaker_max_failures=100)

    async def go() -> list[Any]:
        client = LLMClient("openai", settings=settings)
        try:
            calls = (client.chat(MSGS, temperature=0) for _ in range(10))
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await client.aclose()

    results = asyncio.run(go())
    assert all(isinstance(r, LLMUnavailable) for r in results)
    assert mock_llm.stats()["chat"] == 2  # the leader's two attempts only
    keys = [k.decode() for k in redis_client.keys("aftest:llmcache:*")]
    assert not [k for k in keys if ":" not in k.removeprefix("aftest:llmcache:")]  # not cached


def test_ttl_by_agent_and_kind(mock_llm: MockServer, redis_client) -> None:
    settings = settings_for(mock_llm, llm={"agent_cache_ttl": {"summariser": "2m"}})

    async def go() -> None:
        client = LLMClient("openai", settings=settings)
        try:
            await client.chat(MSGS, temperature=0, agent="summariser")
            await client.chat(MSGS, temperature=0.9, agent="other")
            await client.chat(MSGS, temperature=0.3, cache_ttl=7)
        finally:
            await client.aclose()

    asyncio.run(go())

    def ttl(temperature: float) -> int:
        body = {"model": "gpt-4o-mini", "messages": MSGS, "temperature": temperature}
        return int(redis_client.ttl(request_key("aftest", "openai:gpt-4o-mini", body)))

    assert 110 <= ttl(0) <= 120  # the agent's TTL beats "factual" (24 h)
    assert 290 <= ttl(0.9) <= 300  # creative: 5 min
    assert 1 <= ttl(0.3) <= 7  # per request
