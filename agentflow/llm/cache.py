"""The LLM response cache in Redis, with single flight across workers.

The key is a hash of the normalised request (provider, model, messages, tools, sampling
parameters). Only successful responses are stored. TTL by kind: ``factual`` (temperature 0)
24 h, ``creative`` (temperature ≥ 0.7) 5 min, else ``default`` 1 h — each overridable per
agent and per request. Concurrent identical requests from any worker make one upstream call:
the first takes a short lock and calls, the others wait for its cached answer; if the leader
runs out of retries (LLMUnavailable) the ones waiting for it fail with it instead of
repeating the whole retry sequence one after another.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from agentflow.config import LLMConfig
from agentflow.errors import LLMUnavailable
from agentflow.llm.types import ChatResponse
from agentflow.metrics import get_metrics
from agentflow.models import Usage


def request_key(prefix: str, provider: str, body: dict[str, Any]) -> str:
    """The cache key of a request: sha256 over its canonical JSON."""
    relevant = {k: body.get(k) for k in ("model", "messages", "tools", "temperature",
                                         "max_tokens", "top_p", "tool_choice")}  # fmt: skip
    canonical = json.dumps([provider, relevant], sort_keys=True, separators=(",", ":"))
    return f"{prefix}:llmcache:{hashlib.sha256(canonical.encode()).hexdigest()}"


def ttl_for(config: LLMConfig, temperature: float | None, kind: str | None) -> float:
    """The TTL for a request's kind (explicit, else inferred from its temperature)."""
    if kind is None:
        if temperature == 0:
            kind = "factual"
        elif temperature is not None and temperature >= 0.7:
            kind = "creative"
        else:
            kind = "default"
    return {"factual": config.cache_ttl_factual, "creative": config.cache_ttl_creative}.get(
        kind, config.cache_ttl_default
    )


class ResponseCache:
    """Get-or-call with single flight."""

    def __init__(self, client: aioredis.Redis, lock_timeout: float = 60.0) -> None:
        self.redis = client
        self.lock_timeout = lock_timeout

    async def get_or_call(
        self, key: str, ttl: float, call: Callable[[], Awaitable[ChatResponse]]
    ) -> ChatResponse:
        """The cached response for `key`, else the result of `call` (stored if it succeeds)."""
        metrics = get_metrics()
        lock = key + ":lock"
        delay = 0.005
        waited = 0.0
        failed_key = key + ":failed"
        while True:
            raw, failed = await self.redis.mget(key, failed_key)
            if failed is not None and waited > 0:
                # The leader we waited for ran out of retries: so would we, so fail alike.
                raise LLMUnavailable(f"single-flight leader failed: {failed.decode()}",
                                     retry_after=None)  # fmt: skip
            if raw is not None:
                metrics.incr("llm.cache.hit")
                response = ChatResponse.model_validate_json(raw)
                response.cached = True
                response.usage = Usage(cache_hits=1)  # a hit spends no tokens and costs nothing
                return response
            if await self.redis.set(lock, b"1", nx=True, px=int(self.lock_timeout * 1000)):
                break
            if waited >= self.lock_timeout:
                break  # the leader vanished: call ourselves
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)
        metrics.incr("llm.cache.miss")
        try:
            response = await call()
            await self.redis.set(key, response.model_dump_json(), px=int(ttl * 1000))
            return response
        except LLMUnavailable as exc:
            await self.redis.set(failed_key, str(exc)[:500], px=2000)
            raise
        finally:
            await self.redis.delete(lock)
