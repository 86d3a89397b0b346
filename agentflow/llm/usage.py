"""Usage accounting: tokens and estimated cost per agent and model, summed in Redis.

Every call that reached a provider adds its tokens to ``<prefix>:usage:<agent>:<model>``
(a hash: ``prompt_tokens``, ``completion_tokens``, ``calls``, ``cache_hits``,
``cost_usd``); a cache hit adds only ``cache_hits``. Cost is estimated from a price table in
USD per million tokens (input, output): :data:`DEFAULT_PRICES`, overridden or extended by
``[llm] prices`` in config. A model is priced by its exact name, else by the longest
table entry its name starts with (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``), else at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from agentflow.metrics import get_metrics
from agentflow.models import Usage

# USD per 1M tokens: (input, output). Public list prices at the time of writing; override in
# config (`[llm] prices = { "my-model" = [0.5, 1.5] }`) when they change or for your contract.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}


class PriceTable:
    """Looks up a model's price; estimates the cost of a call."""

    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._by_length = sorted(self.prices, key=len, reverse=True)

    def price(self, model: str) -> tuple[float, float]:
        """(input, output) USD per 1M tokens; (0, 0) for a model the table does not know."""
        if model in self.prices:
            return self.prices[model]
        for name in self._by_length:
            if model.startswith(name):
                return self.prices[name]
        return (0.0, 0.0)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated USD for one call."""
        p_in, p_out = self.price(model)
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000


def usage_key(prefix: str, agent: str | None, model: str) -> str:
    """The Redis hash of one agent's usage of one model."""
    return f"{prefix}:usage:{agent or '-'}:{model or 'unknown'}"


async def record_usage(
    client: aioredis.Redis, prefix: str, agent: str | None, model: str, usage: Usage
) -> None:
    """Add one call's usage to its Redis hash and to the metrics."""
    pipe = client.pipeline(transaction=False)
    key = usage_key(prefix, agent, model)
    if usage.llm_calls:
        pipe.hincrby(key, "prompt_tokens", usage.prompt_tokens)
        pipe.hincrby(key, "completion_tokens", usage.completion_tokens)
        pipe.hincrby(key, "calls", usage.llm_calls)
        if usage.cost_usd:
            pipe.hincrbyfloat(key, "cost_usd", usage.cost_usd)
    if usage.cache_hits:
        pipe.hincrby(key, "cache_hits", usage.cache_hits)
    await pipe.execute()
    metrics = get_metrics()
    name = (model or "unknown").replace(".", "_")
    if usage.llm_calls:
        metrics.incr(f"llm.tokens.prompt.{name}", usage.prompt_tokens)
        metrics.incr(f"llm.tokens.completion.{name}", usage.completion_tokens)
        if agent:
            metrics.incr(f"llm.tokens.agent.{agent}", usage.total_tokens)


def read_usage(client: redis.Redis, prefix: str) -> dict[tuple[str, str], dict[str, float]]:
    """Every (agent, model) usage hash, as numbers (`-` is the agent of calls made by none)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    head = f"{prefix}:usage:"
    for raw_key in client.scan_iter(match=head + "*", count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        agent, _, model = key[len(head) :].partition(":")
        values: dict[Any, Any] = client.hgetall(raw_key)  # type: ignore[assignment]
        out[(agent, model)] = {
            (k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in values.items()
        }
    return out
