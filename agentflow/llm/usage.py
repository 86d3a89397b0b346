"""Usage accounting: tokens and estimated cost per agent and model, summed in Redis.

Every call that reached a provider adds its tokens to ``<prefix>:usage:<agent>:<model>``
(a hash: ``prompt_tokens``, ``completion_tokens``, ``calls``, ``cache_hits``,
``cost_usd``); a cache hit adds only ``cache_hits``. Cost is estimated from a price table in
USD per million tokens (input, output): :data:`DEFAULT_PRICES`, overridden or extended by
``[llm] prices`` in config. A model is priced by its exact name, else by the longest
table entry its name starts with (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``), else at 0.
"""

from __future__ import annotations

import asyncio
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


class UsageRecorder:
    """Sums usage inside the process and adds it to Redis at most every `interval` seconds.

    One pipeline per interval instead of one round trip per call: at hundreds of calls a
    second the per-call write was a measurable share of a worker's CPU. Statsd counters are
    sent at once. :meth:`aclose` (worker shutdown) writes what is pending; a worker killed
    with SIGKILL loses at most `interval` seconds of usage counts, never an event.
    """

    _FIELDS = ("prompt_tokens", "completion_tokens", "calls", "cache_hits")

    def __init__(self, client: aioredis.Redis, prefix: str, interval: float = 0.5) -> None:
        self.redis = client
        self.prefix = prefix
        self.interval = interval
        self._pending: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, agent: str | None, model: str, usage: Usage) -> None:
        """Count one call (or cache hit); written to Redis within `interval` seconds."""
        if not (usage.llm_calls or usage.cache_hits):
            return
        row = self._pending.setdefault(usage_key(self.prefix, agent, model), {})
        if usage.llm_calls:
            row["prompt_tokens"] = row.get("prompt_tokens", 0) + usage.prompt_tokens
            row["completion_tokens"] = row.get("completion_tokens", 0) + usage.completion_tokens
            row["calls"] = row.get("calls", 0) + usage.llm_calls
            if usage.cost_usd:
                row["cost_usd"] = row.get("cost_usd", 0.0) + usage.cost_usd
        if usage.cache_hits:
            row["cache_hits"] = row.get("cache_hits", 0) + usage.cache_hits
        metrics = get_metrics()
        name = (model or "unknown").replace(".", "_")
        if usage.llm_calls:
            metrics.incr(f"llm.tokens.prompt.{name}", usage.prompt_tokens)
            metrics.incr(f"llm.tokens.completion.{name}", usage.completion_tokens)
            if agent:
                metrics.incr(f"llm.tokens.agent.{agent}", usage.total_tokens)
            if usage.cost_usd:  # statsd counts integers: millionths of a dollar
                metrics.incr(f"llm.cost_microusd.{name}", round(usage.cost_usd * 1_000_000))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending sums now."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, row in pending.items():
            for field, value in row.items():
                if field == "cost_usd":
                    pipe.hincrbyfloat(key, field, value)
                else:
                    pipe.hincrby(key, field, int(value))
        try:
            await pipe.execute()
        except Exception:  # Redis away: keep the sums for the next flush
            for key, row in pending.items():
                into = self._pending.setdefault(key, {})
                for field, value in row.items():
                    into[field] = into.get(field, 0) + value
            raise

    async def aclose(self) -> None:
        """Write what is pending (worker shutdown)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.flush()


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
