"""When the LLM stays down: the event is retried later by Celery, or dead-lettered with why."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from agentflow import Client, EventFailed
from agentflow.dlq import DeadLetterQueue
from agentflow.llm.usage import read_usage
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration
PREFIX = "aftest"


def llm_env(mock: MockServer, **extra: str) -> dict[str, str]:
    return {
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock.url + "/v1",
        "AGENTFLOW_LLM__OPENAI__API_KEY": "sk-test-secret",
        "AGENTFLOW_LLM__OPENAI__RETRY_MAX_ATTEMPTS": "2",
        "AGENTFLOW_LLM__OPENAI__RETRY_INITIAL_INTERVAL": "50ms",
        "AGENTFLOW_LLM__OPENAI__BREAKER_MAX_FAILURES": "100",
        **extra,
    }


def configure(mock: MockServer, **options: Any) -> None:
    httpx.post(mock.url + "/config", json=options, timeout=5).raise_for_status()


def test_exhausted_retries_become_a_celery_retry_that_succeeds(
    start_worker, mock_llm: MockServer, redis_client
) -> None:
    """Both in-process attempts fail (503); Celery runs the event again and it succeeds."""
    worker = start_worker(env=llm_env(mock_llm))
    configure(mock_llm, fail_next=2, fail_status=503, retry_after="100ms")
    client = Client()
    try:
        handle = client.emit({"type": "q", "agent": "chat", "data": {"prompt": "again"}})
        result = handle.result(timeout=30)
    finally:
        client.close()
    assert result.output == {"content": "mock: again"}
    assert mock_llm.stats()["chat"] == 3  # 2 attempts in the first run, 1 in the retried run
    assert "Retry in" in worker.log()  # Celery's own retry, with a countdown


def test_an_llm_that_stays_down_sends_the_event_to_the_dlq_with_the_reason(
    start_worker, mock_llm: MockServer, redis_client
) -> None:
    start_worker(env=llm_env(mock_llm, AGENTFLOW_RUNNER__MAX_REDELIVERIES="2"))
    configure(mock_llm, fail_next=1000, fail_status=503, retry_after="50ms")
    client = Client()
    try:
        handle = client.emit({"type": "q", "agent": "chat", "data": {"prompt": "down"}})
        with pytest.raises(EventFailed) as info:
            handle.result(timeout=30)
    finally:
        client.close()
    assert "max_redeliveries=2" in info.value.reason
    letters = DeadLetterQueue(redis_client, PREFIX).list()
    assert len(letters) == 1 and letters[0].event is not None
    assert letters[0].event["id"] == handle.id
    assert "LLM unavailable" in letters[0].reason and "HTTP 503" in letters[0].reason
    assert mock_llm.stats()["chat"] == 4  # 2 runs x 2 attempts; the 3rd start was refused


def test_usage_is_accounted_per_agent_and_model(
    start_worker, mock_llm: MockServer, redis_client
) -> None:
    start_worker(env=llm_env(mock_llm, AGENTFLOW_LLM__OPENAI__MODEL="gpt-4o-mini"))
    client = Client()
    try:
        ask = {"type": "q", "agent": "chat", "data": {"prompt": "price me", "temperature": 0}}
        first = client.emit(ask).result(timeout=30)
        second = client.emit(ask).result(timeout=30)
    finally:
        client.close()
    assert first.usage.llm_calls == 1 and first.usage.cost_usd > 0
    assert second.usage.cache_hits == 1 and second.usage.cost_usd == 0
    # Workers add usage to Redis in one write every half second, not one per call.
    deadline = time.monotonic() + 10
    usage: dict[str, float] = {}
    while time.monotonic() < deadline:
        usage = read_usage(redis_client, PREFIX).get(("chat", "gpt-4o-mini"), {})
        if usage.get("calls") and usage.get("cache_hits"):
            break
        time.sleep(0.1)
    assert usage["calls"] == 1 and usage["cache_hits"] == 1
    assert usage["prompt_tokens"] == first.usage.prompt_tokens
    assert usage["completion_tokens"] == first.usage.completion_tokens
    expected = (first.usage.prompt_tokens * 0.15 + first.usage.completion_tokens * 0.60) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected)
