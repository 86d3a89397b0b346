"""The pooled LLM client: sharded httpx pools, retries with backoff, breaker, cache.

One :class:`LLMClient` per provider per worker process, created after fork on the process's
event loop. Its connections are spread over several `httpx.AsyncClient` shards (one client
carrying hundreds of concurrent calls spends most of its CPU in pool bookkeeping); each shard
is replaced once it is older than `max_connection_lifetime`, the old one closed after the
calls on it had time to finish.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from typing import Any

import httpx

from agentflow.broker.connection import get_async_redis
from agentflow.config import LLMProviderConfig, Settings, get_settings
from agentflow.errors import LLMRequestError, LLMUnavailable, RateLimited
from agentflow.llm.breaker import CircuitBreaker
from agentflow.llm.cache import ResponseCache, request_key, ttl_for
from agentflow.llm.providers import PROVIDERS, Provider
from agentflow.llm.types import ChatResponse
from agentflow.metrics import get_metrics

log = logging.getLogger("agentflow.llm")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def backoff(attempt: int, initial: float, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: initial × 2^(attempt-1), scaled by 0.5–1.0."""
    return min(cap, initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _Shard:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.born = time.monotonic()


class LLMClient:
    """Chat and embedding calls to one provider, shared by every task in the process."""

    def __init__(self, provider: str, settings: Settings | None = None) -> None:
        self.settings = s = settings or get_settings()
        config: LLMProviderConfig = getattr(s.llm, "openai" if provider == "mock" else provider)
        self.config = config
        self.provider: Provider = PROVIDERS[provider](config)
        self._shard_count = max(1, min(32, config.max_connections // 8))
        self._shards: list[_Shard] = [self._new_shard() for _ in range(self._shard_count)]
        self._next = itertools.count()
        redis = get_async_redis()
        prefix = s.broker.key_prefix
        self.prefix = prefix
        self.breaker = CircuitBreaker(redis, f"{prefix}:breaker:{self.provider.key}",
                                      config.breaker_max_failures, config.breaker_timeout)  # fmt: skip
        self.cache = ResponseCache(redis, lock_timeout=config.request_timeout * 2)

    # -- connection pool -------------------------------------------------------------------
    def _new_shard(self) -> _Shard:
        c = self.config
        per_shard = max(1, c.max_connections // self._shard_count)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard,
                              keepalive_expiry=c.idle_timeout)  # fmt: skip
        timeout = httpx.Timeout(c.request_timeout, connect=c.connection_timeout)
        client = httpx.AsyncClient(limits=limits, timeout=timeout, headers=self.provider.headers())
        return _Shard(client)

    def _client(self) -> httpx.AsyncClient:
        i = next(self._next) % self._shard_count
        shard = self._shards[i]
        if time.monotonic() - shard.born > self.config.max_connection_lifetime:
            self._shards[i] = self._new_shard()
            old = shard.client
            asyncio.get_running_loop().call_later(
                self.config.request_timeout + 1, lambda: asyncio.ensure_future(old.aclose())
            )
            shard = self._shards[i]
        return shard.client

    async def warm(self) -> int:
        """Open `min_connections` connections now, so the first events do not pay for them."""
        n = self.config.min_connections
        if n <= 0:
            return 0

        async def _touch(client: httpx.AsyncClient) -> bool:
            try:
                await client.get(self.provider.base_url, timeout=self.config.connection_timeout)
                return True
            except httpx.HTTPError:
                return False

        results = await asyncio.gather(*(_touch(self._client()) for _ in range(n)))
        return sum(results)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await asyncio.gather(*(s.client.aclose() for s in self._shards), return_exceptions=True)

    # -- calls -----------------------------------------------------------------------------
    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries, backoff, Retry-After and the shared breaker."""
        c = self.config
        metrics = get_metrics()
        last_error, retry_after = "no attempt made", None
        status: int | None = None
        for attempt in range(1, c.retry_max_attempts + 1):
            await self.breaker.before_call()
            started = time.perf_counter()
            try:
                response = await self._client().post(url, json=body)
            except httpx.TimeoutException as exc:
                last_error, status, retry_after = (
                    f"timeout after {c.request_timeout:g}s: {exc!r}",
                    None,
                    None,
                )
            except httpx.TransportError as exc:
                last_error, status, retry_after = f"connection error: {exc!r}", None, None
            else:
                metrics.timing(
                    f"llm.call.{self.provider.name}", (time.perf_counter() - started) * 1000
                )
                status = response.status_code
                if status < 400:
                    await self.breaker.record(ok=True)
                    return dict(response.json())
                if status not in _RETRY_STATUS:
                    raise LLMRequestError(
                        f"{self.provider.name} refused the request ({status}): "
                        f"{response.text[:500]}", status_code=status,
                    )  # fmt: skip
                retry_after = retry_after_seconds(response)
                last_error = f"HTTP {status}: {response.text[:200]}"
            metrics.incr(f"llm.errors.{self.provider.name}")
            if status != 429:  # a rate limit is not a sign of an unhealthy provider
                await self.breaker.record(ok=False)
            if attempt < c.retry_max_attempts:
                delay = (
                    retry_after
                    if retry_after is not None
                    else backoff(attempt, c.retry_initial_interval)
                )
                log.info("LLM call failed (%s); retry %d in %.2fs", last_error, attempt, delay)
                await asyncio.sleep(delay)
        message = (
            f"{self.provider.name} unavailable after {c.retry_max_attempts} attempts: {last_error}"
        )
        if status == 429:
            raise RateLimited(message, retry_after=retry_after)
        raise LLMUnavailable(message, retry_after=retry_after)

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        temperature: float | None = None,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        cache: bool | None = True,
        cache_ttl: float | None = None,
        cache_kind: str | None = None,
        agent: str | None = None,
    ) -> ChatResponse:
        """One chat completion; cached in Redis unless `cache` is false."""
        body: dict[str, Any] = {"model": model or self.config.model, "messages": messages}
        if temperature is not None:
            body["temperature"] = temperature
        if tools:
            body["tools"] = tools
        if max_tokens is not None:
            body["max_tokens"] = max_tokens

        async def call() -> ChatResponse:
            data = await self._post(self.provider.chat_url(), self.provider.chat_body(body))
            return self.provider.parse_chat(data)

        if cache is False or not self.settings.llm.cache_enabled:
            response = await call()
        else:
            key = request_key(self.prefix, self.provider.key, body)
            ttl = (
                cache_ttl
                if cache_ttl is not None
                else ttl_for(self.settings.llm, temperature, cache_kind)
            )
            response = await self.cache.get_or_call(key, ttl, call)
        self._account(response, agent)
        return response

    async def embed(self, texts: list[str], *, model: str | None = None) -> list[list[float]]:
        """Embedding vectors for `texts`, in order."""
        data = await self._post(self.provider.embed_url(), self.provider.embed_body(texts, model))
        return self.provider.parse_embed(data)

    def _account(self, response: ChatResponse, agent: str | None) -> None:
        metrics = get_metrics()
        model = (response.model or "unknown").replace(".", "_")
        if response.usage.llm_calls:
            metrics.incr(f"llm.tokens.prompt.{model}", response.usage.prompt_tokens)
            metrics.incr(f"llm.tokens.completion.{model}", response.usage.completion_tokens)
