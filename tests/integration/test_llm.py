"""The LLM layer over real HTTP (the mock server) and real Redis, across real processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from agentflow import CircuitOpen, Client, LLMRequestError, LLMUnavailable, RateLimited
from agentflow.config import Settings, load_settings
from agentflow.llm.client import LLMClient
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration


def llm_env(mock: MockServer, **extra: str) -> dict[str, str]:
    env = {
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock.url + "/v1",
        "AGENTFLOW_LLM__OPENAI__API_KEY": "sk-test-secret",
        "AGENTFLOW_LLM__OPENAI__RETRY_INITIAL_INTERVAL": "50ms",
    }
    env.update(extra)
    return env


def llm_client(mock: MockServer, **openai: Any) -> Settings:
    """Settings for an in-process LLMClient (built inside the event loop that uses it)."""
    config = {"endpoint": mock.url + "/v1", "api_key": "sk-test-secret",
              "retry_initial_interval": 0.05, **openai}  # fmt: skip
    return load_settings(llm={"provider": "openai", "openai": config})


def configure(mock: MockServer, **options: Any) -> None:
    httpx.post(mock.url + "/config", json=options, timeout=5).raise_for_status()


def chat_once(settings: Settings, prompt: str, **kw: Any) -> Any:
    async def go() -> Any:
        client = LLMClient("openai", settings=settings)
        try:
            return await client.chat([{"role": "user", "content": prompt}], **kw)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_429_is_retried_after_retry_after(mock_llm: MockServer, redis_client) -> None:
    configure(mock_llm, fail_next=2, fail_status=429, retry_after="300ms")
    started = time.monotonic()
    response = chat_once(llm_client(mock_llm), "hello", cache=False)
    assert response.content == "mock: hello"
    assert time.monotonic() - started >= 0.6  # two waits of Retry-After: 300ms
    assert mock_llm.stats()["chat"] == 3


def test_retries_run_out_with_a_clear_error(mock_llm: MockServer, redis_client) -> None:
    configure(mock_llm, fail_next=10, fail_status=429, retry_after="10ms")
    with pytest.raises(RateLimited, match="after 3 attempts"):
        chat_once(llm_client(mock_llm, breaker_max_failures=100), "x", cache=False)
    assert mock_llm.stats()["chat"] == 3


def test_other_4xx_fails_at_once(mock_llm: MockServer, redis_client) -> None:
    configure(mock_llm, fail_next=1, fail_status=400)
    with pytest.raises(LLMRequestError) as info:
        chat_once(llm_client(mock_llm), "x", cache=False)
    assert info.value.status_code == 400
    assert mock_llm.stats()["chat"] == 1


def test_request_timeout(mock_llm: MockServer, redis_client) -> None:
    configure(mock_llm, latency="2s")
    with pytest.raises(LLMUnavailable, match="timeout"):
        chat_once(llm_client(mock_llm, request_timeout=0.2, retry_max_attempts=2), "x", cache=False)


def test_single_flight_makes_one_upstream_call(mock_llm: MockServer, redis_client) -> None:
    configure(mock_llm, latency="300ms")
    settings = llm_client(mock_llm)

    async def go() -> list[Any]:
        client = LLMClient("openai", settings=settings)
        try:
            msgs = [{"role": "user", "content": "same question"}]
            return await asyncio.gather(*(client.chat(msgs, temperature=0) for _ in range(20)))
        finally:
            await client.aclose()

    responses = asyncio.run(go())
    assert {r.content for r in responses} == {"mock: same question"}
    assert mock_llm.stats()["chat"] == 1
    assert sum(r.cached for r in responses) == 19


def test_cache_hit_across_processes(start_worker, mock_llm: MockServer, redis_client) -> None:
    """The test process fills the cache; a worker process answers from it."""
    first = chat_once(llm_client(mock_llm), "what is redis?", temperature=0)
    assert not first.cached
    start_worker(env=llm_env(mock_llm))
    client = Client()
    try:
        result = client.emit({"type": "q", "agent": "chat",
                              "data": {"prompt": "what is redis?", "temperature": 0}}).result(30)  # fmt: skip
    finally:
        client.close()
    assert result.output == {"content": "mock: what is redis?"}
    assert result.usage.cache_hits == 1
    assert mock_llm.stats()["chat"] == 1


def test_breaker_opened_in_one_process_is_seen_by_a_worker(
    start_worker, mock_llm: MockServer, redis_client
) -> None:
    breaker = {"AGENTFLOW_LLM__OPENAI__BREAKER_MAX_FAILURES": "2",
               "AGENTFLOW_LLM__OPENAI__BREAKER_TIMEOUT": "2s",
               "AGENTFLOW_LLM__OPENAI__RETRY_MAX_ATTEMPTS": "2"}  # fmt: skip
    # The worker is up first, so that the breaker is still open when it gets the event.
    start_worker(env=llm_env(mock_llm, **breaker))
    # This process fails twice against the provider: the shared breaker opens.
    configure(mock_llm, fail_next=2, fail_status=500)
    with pytest.raises(LLMUnavailable):
        chat_once(llm_client(mock_llm, breaker_max_failures=2, breaker_timeout=2.0,
                             retry_max_attempts=2), "x", cache=False)  # fmt: skip
    opened = time.monotonic()
    mock_llm.reset_stats()
    # The worker process sees it open: it fails fast (no request reaches the server) and
    # Celery retries the event later; once the breaker half-opens, the probe succeeds.
    client = Client()
    try:
        with pytest.raises(CircuitOpen):
            chat_once(llm_client(mock_llm, breaker_max_failures=2, breaker_timeout=2.0), "y",
                      cache=False)  # fmt: skip
        handle = client.emit(
            {"type": "q", "agent": "chat", "data": {"prompt": "p", "cache": False}}
        )
        result = handle.result(timeout=30)
    finally:
        client.close()
    assert result.output == {"content": "mock: p"}
    assert time.monotonic() - opened >= 1.0
    assert mock_llm.stats()["chat"] == 1  # only the successful probe reached the server


def test_chat_agent_end_to_end(start_worker, mock_llm: MockServer, redis_client) -> None:
    start_worker(env=llm_env(mock_llm))
    client = Client()
    try:
        result = client.emit({"type": "q", "agent": "chat", "session_id": "conv",
                              "data": {"prompt": "hi", "cache": False}}).result(30)  # fmt: skip
    finally:
        client.close()
    assert result.output == {"content": "mock: hi"}
    assert result.usage.llm_calls == 1 and result.usage.total_tokens > 0
    assert result.state_updates.set["history"][-1] == {"role": "assistant", "content": "mock: hi"}
