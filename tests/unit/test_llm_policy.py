"""Retry backoff, cache keys and TTLs, token estimates, prices, embedding batches (pure)."""

from __future__ import annotations

import asyncio

import pytest

from agentflow.config import load_settings
from agentflow.llm.batching import EmbedBatcher
from agentflow.llm.cache import request_key, ttl_for
from agentflow.llm.client import backoff
from agentflow.llm.ratelimit import estimate_tokens, limiter_key
from agentflow.llm.usage import PriceTable, usage_key


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        delays = [backoff(attempt, 1.0) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 100  # jittered
    assert backoff(20, 1.0, cap=30.0) <= 30.0


def test_cache_key_is_a_hash_of_the_normalised_request() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    b = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_key("p", "openai:m", a) == request_key("p", "openai:m", b)
    assert request_key("p", "openai:m", a) != request_key("p", "azure:m", a)
    assert request_key("p", "openai:m", a) != request_key("p", "openai:m", {**a, "temperature": 1})
    assert "hi" not in request_key("p", "openai:m", a)


def test_ttl_by_kind_inferred_from_temperature() -> None:
    llm = load_settings(llm={"cache_ttl_default": "10m"}).llm
    assert ttl_for(llm, 0, None) == 86400
    assert ttl_for(llm, 0.9, None) == 300
    assert ttl_for(llm, 0.3, None) == 600
    assert ttl_for(llm, None, None) == 600
    assert ttl_for(llm, 0.9, "factual") == 86400


def test_token_estimate_and_the_limiter_key_never_holds_the_api_key() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate_tokens(body) == 150
    assert estimate_tokens({"input": ["abcd", "efgh"]}) == 2
    key = limiter_key("af", "openai:gpt-4o-mini", "sk-secret")
    assert "sk-secret" not in key and key.startswith("af:ratelimit:openai:gpt-4o-mini:")
    assert key != limiter_key("af", "openai:gpt-4o-mini", "sk-other")


def test_prices_by_exact_name_longest_prefix_and_override() -> None:
    table = PriceTable({"my-model": (1.0, 2.0)})
    assert table.price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # not gpt-4o's price
    assert table.price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert table.cost("my-model", 1_000_000, 500_000) == pytest.approx(2.0)
    assert table.cost("unknown-model", 1000, 1000) == 0.0
    assert usage_key("af", "chat", "gpt-4o") == "af:usage:chat:gpt-4o"
    assert usage_key("af", None, "m") == "af:usage:-:m"


def test_concurrent_embeds_coalesce_and_each_caller_gets_its_own_vectors() -> None:
    calls: list[tuple[list[str], str | None, str | None]] = []

    async def upstream(texts: list[str], model: str | None, agent: str | None) -> list[list[float]]:
        calls.append((texts, model, agent))
        await asyncio.sleep(0)
        return [[float(len(t))] for t in texts]

    async def go() -> list[list[list[float]]]:
        batcher = EmbedBatcher(upstream, batch_size=100, batch_timeout=0.02)
        requests = [["a" * i, "b" * (i + 1)] for i in range(1, 11)]
        return await asyncio.gather(*(batcher.embed(r, "m", "rag") for r in requests))

    results = asyncio.run(go())
    assert len(calls) == 1 and len(calls[0][0]) == 20 and calls[0][2] == "rag"
    assert results[0] == [[1.0], [2.0]] and results[9] == [[10.0], [11.0]]


def test_a_full_batch_goes_at_once_and_errors_reach_every_caller() -> None:
    sizes: list[int] = []

    async def upstream(texts: list[str], model: str | None, agent: str | None) -> list[list[float]]:
        sizes.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("upstream failed")
        return [[0.0] for _ in texts]

    async def go() -> None:
        batcher = EmbedBatcher(upstream, batch_size=4, batch_timeout=10.0)  # never times out
        await asyncio.gather(*(batcher.embed([f"t{i}"], None) for i in range(8)))
        assert sizes == [4, 4]
        failing = [batcher.embed(["ok"], None), batcher.embed(["x", "boom", "y"], None)]
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(go())


def test_usage_sends_tokens_and_cost_to_statsd(monkeypatch) -> None:
    """Every priced call counts its tokens and its estimated cost (millionths of a USD)."""
    import asyncio

    from agentflow.llm import usage as usage_mod
    from agentflow.models import Usage

    sent: list[tuple[str, int]] = []

    class Recorder:
        def incr(self, stat: str, count: int = 1, rate: float = 1) -> None:
            sent.append((stat, count))

    monkeypatch.setattr(usage_mod, "get_metrics", Recorder)

    async def record() -> None:
        recorder = usage_mod.UsageRecorder(client=None, prefix="af", interval=60)  # type: ignore[arg-type]
        cost = PriceTable().cost("gpt-4o-mini", 1000, 500)
        recorder.add("chat", "gpt-4o-mini", Usage(prompt_tokens=1000, completion_tokens=500,
                                                   total_tokens=1500, llm_calls=1, cost_usd=cost))  # fmt: skip
        recorder.add("chat", "free-model", Usage(prompt_tokens=1, completion_tokens=1,
                                                  total_tokens=2, llm_calls=1))  # fmt: skip
        recorder._task.cancel()  # type: ignore[union-attr]

    asyncio.run(record())
    assert ("llm.tokens.prompt.gpt-4o-mini", 1000) in sent
    assert ("llm.cost_microusd.gpt-4o-mini", 450) in sent  # 1000 x 0.15 + 500 x 0.60
    assert not [s for s, _ in sent if s == "llm.cost_microusd.free-model"]  # no price, no cost
