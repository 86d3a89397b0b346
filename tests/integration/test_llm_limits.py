"""Shared rate limits and batching over real HTTP (the mock server) and real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import httpx
import pytest

from agentflow.config import Settings, load_settings
from agentflow.errors import RateLimited
from agentflow.llm.client import LLMClient
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration


def settings_for(
    mock: MockServer, performance: dict[str, Any] | None = None, **openai: Any
) -> Settings:
    config = {"endpoint": mock.url + "/v1", "api_key": "sk-test", **openai}
    return load_settings(llm={"provider": "openai", "openai": config},
                         performance=performance or {})  # fmt: skip


def run_calls(settings: Settings, n: int, concurrent: bool = False) -> list[Any]:
    """`n` uncached chat calls from this process; exceptions are returned, not raised."""

    async def go() -> list[Any]:
        client = LLMClient("openai", settings=settings)
        try:
            calls = [client.chat([{"role": "user", "content": f"q{i}"}], cache=False)
                     for i in range(n)]  # fmt: skip
            if concurrent:
                return list(await asyncio.gather(*calls, return_exceptions=True))
            out: list[Any] = []
            for call in calls:
                try:
                    out.append(await call)
                except RateLimited as exc:
                    out.append(exc)
            return out
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_requests_per_minute_is_shared_between_processes(
    mock_llm: MockServer, redis_client
) -> None:
    """Another process spends 4 of 6 requests per minute; this one gets only the other 2."""
    script = textwrap.dedent(f"""
        import asyncio
        from agentflow.config import load_settings
        from agentflow.llm.client import LLMClient

        async def go():
            s = load_settings(llm={{"provider": "openai", "openai": {{
                "endpoint": "{mock_llm.url}/v1", "api_key": "sk-test",
                "requests_per_minute": 6, "rate_limit_max_wait": 0.3}}}})
            c = LLMClient("openai", settings=s)
            for i in range(4):
                await c.chat([{{"role": "user", "content": f"other {{i}}"}}], cache=False)
            await c.aclose()

        asyncio.run(go())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env=os.environ.copy(), timeout=60)
    assert mock_llm.stats()["chat"] == 4
    results = run_calls(settings_for(mock_llm, requests_per_minute=6, rate_limit_max_wait=0.3), 4)
    assert [type(r).__name__ for r in results] == ["ChatResponse", "ChatResponse",
                                                   "RateLimited", "RateLimited"]  # fmt: skip
    assert "rate limit" in str(results[2]) and results[2].retry_after > 5
    assert mock_llm.stats()["chat"] == 6  # refused calls never reached the provider


def test_a_spent_bucket_makes_callers_wait_then_go(mock_llm: MockServer, redis_client) -> None:
    """60 requests per minute: 60 go at once, the 61st waits about a second for the refill."""
    started = time.monotonic()
    results = run_calls(settings_for(mock_llm, requests_per_minute=60), 61, concurrent=True)
    assert all(type(r).__name__ == "ChatResponse" for r in results)
    assert time.monotonic() - started >= 0.5
    assert mock_llm.stats()["chat"] == 61


def test_tokens_per_minute_reserves_then_settles_real_usage(
    mock_llm: MockServer, redis_client
) -> None:
    """1000 tokens/min: while one 600-token request is in flight, two more do not fit; once it
    has answered (using only a few tokens) the unused reservation is back and a next one fits."""
    httpx.post(mock_llm.url + "/config", json={"latency": "300ms"}, timeout=5).raise_for_status()
    settings = settings_for(mock_llm, tokens_per_minute=1000, rate_limit_max_wait=0.2)

    async def go() -> tuple[list[Any], Any]:
        client = LLMClient("openai", settings=settings)
        try:

            def ask(i: int) -> Any:
                return client.chat([{"role": "user", "content": f"t{i}"}], max_tokens=600,
                                   cache=False)  # fmt: skip

            first = asyncio.ensure_future(ask(0))
            await asyncio.sleep(0.05)  # the first has reserved its tokens and is in flight
            refused = await asyncio.gather(ask(1), ask(2), return_exceptions=True)
            return [await first, *refused], await ask(3)
        finally:
            await client.aclose()

    concurrent, later = asyncio.run(go())
    assert [type(r).__name__ for r in concurrent] == ["ChatResponse", "RateLimited", "RateLimited"]
    assert later.content == "mock: t3"
    assert mock_llm.stats()["chat"] == 2


def test_concurrent_embeddings_coalesce_into_fewer_calls(
    mock_llm: MockServer, redis_client
) -> None:
    texts = [[f"doc {i} a", f"doc {i} b"] for i in range(20)]

    async def go(settings: Settings) -> list[list[list[float]]]:
        client = LLMClient("openai", settings=settings)
        try:
            return list(await asyncio.gather(*(client.embed(t) for t in texts)))
        finally:
            await client.aclose()

    batched = asyncio.run(go(settings_for(mock_llm, performance={
        "enable_request_batching": True, "batch_size": 16, "batch_timeout": "50ms"})))  # fmt: skip
    stats = mock_llm.stats()
    assert stats["embedding_inputs"] == 40
    assert stats["embeddings"] <= 3  # 40 texts in batches of >= 16
    mock_llm.reset_stats()
    unbatched = asyncio.run(go(settings_for(mock_llm, performance={
        "enable_request_batching": False})))  # fmt: skip
    assert mock_llm.stats()["embeddings"] == 20
    assert batched == unbatched  # every caller got exactly its own vectors, in order
    assert len(batched[0]) == 2 and batched[0][0] != batched[0][1]
