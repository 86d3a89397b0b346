"""The pooled LLM client: sharded httpx pools, retries, breaker, rate limits, cache, batching.

One :class:`LLMClient` per provider per worker process, created after fork on the process's
event loop. Its connections are spread over several `httpx.AsyncClient` shards, each on
aiohttp's connection pool (:class:`AiohttpTransport`); each shard is replaced once it is
older than `max_connection_lifetime`, the old one closed after the calls on it had time to
finish, so connections are renewed a shard at a time.

Every HTTP attempt goes: shared breaker (fail fast while open) → shared rate limit (wait for
a slot) → request → classify (success, retryable, or a 4xx that fails at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import logging
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx

from agentflow._redis.connection import get_async_redis
from agentflow.config import LLMProviderConfig, Settings, get_settings
from agentflow.errors import LLMRequestError, LLMUnavailable, RateLimited
from agentflow.llm._aiohttp_transport import AiohttpTransport, Timeouts
from agentflow.llm.batching import EmbedBatcher
from agentflow.llm.breaker import CircuitBreaker
from agentflow.llm.cache import ResponseCache, request_key, ttl_for
from agentflow.llm.providers import PROVIDERS, Provider
from agentflow.llm.ratelimit import RateLimiter, estimate_tokens, limiter_key
from agentflow.llm.types import ChatResponse
from agentflow.llm.usage import PriceTable, UsageRecorder
from agentflow.metrics import get_metrics
from agentflow.models import Usage
from agentflow.timeline import note_llm_call

log = logging.getLogger("agentflow.llm")


def _running_agent() -> str:
    """The name of the agent the caller runs for ("" outside an agent)."""
    from agentflow.context import current_run

    run = current_run()
    return run.agent if run is not None else ""


_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
T = TypeVar("T")


def backoff(attempt: int, initial: float, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: initial × 2^(attempt-1), scaled by 0.5–1.0."""
    return float(min(cap, initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _HTTPStatus(Exception):
    """An error status from the provider, to be classified by the retry loop."""

    def __init__(self, status: int, text: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.text = text
        self.retry_after = retry_after


class _StreamBroken(Exception):
    """A streamed reply failed after text was already published: not retried in-process."""


def _user_agent() -> str:
    try:
        return f"agentflow/{importlib.metadata.version('agentflow')}"
    except importlib.metadata.PackageNotFoundError:
        return "agentflow"


_USER_AGENT = _user_agent()


def _proxied(url: str) -> bool:
    """Whether the environment sends `url` through a proxy (``HTTP(S)_PROXY``, ``ALL_PROXY``,
    not excluded by ``NO_PROXY``), as httpx's ``trust_env`` would."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parsed.host)


class _Shard:
    """One httpx client and the transport (connection pool) under it; no transport of our
    own when the environment routes the provider through a proxy (httpx then mounts the
    proxy's transport itself)."""

    def __init__(self, client: httpx.AsyncClient, transport: AiohttpTransport | None) -> None:
        self.client = client
        self.transport = transport
        self.born = time.monotonic()


class LLMClient:
    """Chat and embedding calls to one provider, shared by every task in the process."""

    def __init__(self, provider: str, settings: Settings | None = None) -> None:
        self.settings = s = settings or get_settings()
        config: LLMProviderConfig = getattr(s.llm, "openai" if provider == "mock" else provider)
        self.config = config
        self.provider: Provider = PROVIDERS[provider](config)
        self._shard_count = max(1, min(32, config.max_connections // 8))
        self._through_proxy = _proxied(self.provider.base_url)
        self._timeout = httpx.Timeout(config.request_timeout, connect=config.connection_timeout)
        self._timeout_ext = self._timeout.as_dict()
        self._timeouts: Timeouts | None = None
        self._json_headers = httpx.Headers(
            {
                "accept": "application/json",
                "content-type": "application/json",
                "user-agent": _USER_AGENT,
                **self.provider.headers(),
            }
        )
        self._plain_headers = dict(self._json_headers.items())
        self._ssl_context = httpx.create_ssl_context()
        self._shards: list[_Shard] = [self._new_shard() for _ in range(self._shard_count)]
        self._next = itertools.count()
        self.redis = redis = get_async_redis()
        self.prefix = prefix = s.broker.key_prefix
        self.breaker = CircuitBreaker(redis, f"{prefix}:breaker:{self.provider.key}",
                                      config.breaker_max_failures, config.breaker_timeout)  # fmt: skip
        self.cache = ResponseCache(redis, lock_timeout=config.request_timeout * 2)
        api_key = config.api_key.get_secret_value() if config.api_key else None
        self.limiter = RateLimiter(
            redis,
            limiter_key(prefix, self.provider.key, api_key),
            config.requests_per_minute,
            config.tokens_per_minute,
            config.rate_limit_max_wait,
        )
        self.prices = PriceTable(s.llm.prices)
        self.usage = UsageRecorder(redis, prefix)
        perf = s.performance
        self.batcher: EmbedBatcher | None = (
            EmbedBatcher(self._embed_batch, perf.batch_size, perf.batch_timeout)
            if perf.enable_request_batching
            else None
        )

    # -- connection pool -------------------------------------------------------------------
    def _new_shard(self) -> _Shard:
        c = self.config
        per_shard = max(1, c.max_connections // self._shard_count)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard,
                              keepalive_expiry=c.idle_timeout)  # fmt: skip
        if self._through_proxy:
            client = httpx.AsyncClient(limits=limits, timeout=self._timeout,
                                       headers=self.provider.headers())  # fmt: skip
            return _Shard(client, None)
        transport = AiohttpTransport(limits, self._ssl_context)
        client = httpx.AsyncClient(transport=transport, timeout=self._timeout,
                                   headers=self.provider.headers())  # fmt: skip
        return _Shard(client, transport)

    def _shard(self) -> _Shard:
        i = next(self._next) % self._shard_count
        shard = self._shards[i]
        if time.monotonic() - shard.born > self.config.max_connection_lifetime:
            self._shards[i] = self._new_shard()
            old = shard.client
            # Closed once every call on it is over: the longest one waits for a connection,
            # connects, sends and waits for its reply (the transport's send deadline: the
            # sum of the four timeouts), then reads the body.
            t = self._timeout_ext
            linger = sum(v for v in t.values() if v is not None) + (t.get("read") or 0) + 1
            asyncio.get_running_loop().call_later(
                linger, lambda: asyncio.ensure_future(old.aclose())
            )
            shard = self._shards[i]
        return shard

    def _client(self) -> httpx.AsyncClient:
        return self._shard().client

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
        """Send waiting embedding batches, then close every pooled connection."""
        if self.batcher is not None:
            await self.batcher.aclose()
        with contextlib.suppress(Exception):
            await self.usage.aclose()
        await asyncio.gather(*(s.client.aclose() for s in self._shards), return_exceptions=True)

    # -- the retry loop --------------------------------------------------------------------
    async def _with_retries(self, send: Callable[[_Shard], Awaitable[T]], tokens: int) -> T:
        """Run `send` under breaker, rate limit and retries with backoff and Retry-After."""
        c = self.config
        metrics = get_metrics()
        name = self.provider.name
        last_error, retry_after = "no attempt made", None
        status: int | None = None
        for attempt in range(1, c.retry_max_attempts + 1):
            await self.breaker.before_call()
            await self.limiter.acquire(tokens)
            started = time.perf_counter()
            try:
                result = await send(self._shard())
            except httpx.TimeoutException as exc:
                last_error, status, retry_after = (
                    f"timeout after {c.request_timeout:g}s: {type(exc).__name__}", None, None
                )  # fmt: skip
            except httpx.TransportError as exc:
                last_error, status, retry_after = f"connection error: {exc!r}", None, None
            except _StreamBroken as exc:
                await self.breaker.record(ok=False)
                raise LLMUnavailable(f"{name} stream broke mid-reply: {exc}") from exc
            except _HTTPStatus as exc:
                status = exc.status
                if status not in _RETRY_STATUS:
                    await self.breaker.record(ok=True)  # it answered: not an outage
                    raise LLMRequestError(
                        f"{name} refused the request ({status}): {exc.text[:500]}",
                        status_code=status,
                    ) from None
                retry_after = exc.retry_after
                last_error = f"HTTP {status}: {exc.text[:200]}"
            else:
                metrics.timing(f"llm.call.{name}", (time.perf_counter() - started) * 1000)
                await self.breaker.record(ok=True)
                return result
            await self.limiter.adjust(tokens)  # a failed attempt spent no tokens
            metrics.incr(f"llm.errors.{name}")
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
        message = f"{name} unavailable after {c.retry_max_attempts} attempts: {last_error}"
        if status == 429:
            raise RateLimited(message, retry_after=retry_after)
        raise LLMUnavailable(message, retry_after=retry_after)

    async def _post(self, url: str, body: dict[str, Any], tokens: int = 0) -> dict[str, Any]:
        """POST a JSON body with retries; the decoded JSON reply.

        The request goes straight to the shard's aiohttp pool (``post_json``): the client's
        layers — auth flows, redirects, cookie jar, URL and header merging, httpx's request
        and response objects — have nothing to do for a JSON call to a fixed endpoint.
        Timeouts and httpx's exception types are the same (the transport maps them).
        """
        content = json.dumps(body, separators=(",", ":")).encode()

        async def send(shard: _Shard) -> dict[str, Any]:
            transport = shard.transport
            if transport is None:  # through a proxy: the client mounts httpx's transport
                response = await shard.client.post(url, content=content,
                                                   headers=self._json_headers)  # fmt: skip
                status, reply = response.status_code, response.content
                headers: Mapping[str, str] = response.headers
            else:
                if self._timeouts is None:
                    self._timeouts = transport.timeouts(self._timeout_ext)
                status, reply, headers = await transport.post_json(
                    url, content, self._plain_headers, self._timeouts
                )
            if status >= 400:
                raise _HTTPStatus(status, reply.decode(errors="replace"),
                                  retry_after_seconds(headers))  # fmt: skip
            return dict(json.loads(reply))

        return await self._with_retries(send, tokens)

    async def _stream(
        self, body: dict[str, Any], on_piece: Callable[[str], Awaitable[None]], tokens: int
    ) -> ChatResponse:
        """A streamed chat call: each piece of text goes to `on_piece` as it arrives."""
        url = self.provider.chat_url()
        payload = self.provider.stream_body(body)

        async def send(shard: _Shard) -> ChatResponse:
            parser = self.provider.stream_parser()
            published = False
            async with shard.client.stream("POST", url, json=payload) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    raise _HTTPStatus(
                        response.status_code, text, retry_after_seconds(response.headers)
                    )
                try:
                    async for line in response.aiter_lines():
                        piece = parser.feed_line(line)
                        if piece:
                            await on_piece(piece)
                            published = True
                        if parser.done:
                            break
                except (httpx.HTTPError, ValueError) as exc:
                    if published:
                        raise _StreamBroken(repr(exc)) from exc
                    raise
            return parser.response()

        return await self._with_retries(send, tokens)

    # -- chat ------------------------------------------------------------------------------
    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        temperature: float | None = None,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        cache: bool | None = None,
        cache_ttl: float | None = None,
        cache_kind: str | None = None,
        stream_to: str | None = None,
        stream_close: bool = True,
        agent: str | None = None,
    ) -> ChatResponse:
        """One chat completion; cached in Redis unless `cache` is false (None: as the
        running agent's ``[agents.<name>] cache`` says, else cached). The agent's policy
        also gives the default `model` (``llm_model``) and `cache_ttl`.

        With `stream_to` (an event id) the call streams (SSE) and publishes each piece of
        text to that event's Redis stream as it arrives, so ``handle.stream()`` yields it; a
        cache hit publishes the whole reply as one piece. `stream_close` ends the stream
        when the call is done (false: the agent will stream more and close it itself).
        """
        policy = self.settings.agents.policy(agent or _running_agent())
        if cache is None:
            cache = policy.cache if policy.cache is not None else True
        if cache_ttl is None:
            cache_ttl = policy.cache_ttl
        body: dict[str, Any] = {"model": model or policy.llm_model or self.config.model,
                                "messages": messages}  # fmt: skip
        if temperature is not None:
            body["temperature"] = temperature
        if tools:
            body["tools"] = tools
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        tokens = estimate_tokens(body)
        started = time.monotonic()
        writer = await self._stream_writer(stream_to) if stream_to else None

        async def call() -> ChatResponse:
            if writer is not None:
                response = await self._stream(body, writer.add, tokens)
            else:
                data = await self._post(self.provider.chat_url(), self.provider.chat_body(body),
                                        tokens)  # fmt: skip
                response = self.provider.parse_chat(data)
            if response.usage.total_tokens:
                await self.limiter.adjust(tokens - response.usage.total_tokens)
            u = response.usage
            u.cost_usd = self.prices.cost(response.model or str(body["model"] or ""),
                                          u.prompt_tokens, u.completion_tokens)  # fmt: skip
            return response

        ttl = self._ttl(cache_ttl, cache_kind, temperature, agent)
        try:
            if cache is False or ttl <= 0 or not self.settings.llm.cache_enabled:
                response = await call()
            else:
                key = request_key(self.prefix, self.provider.key, body)
                response = await self.cache.get_or_call(key, ttl, call)
            if writer is not None:
                if response.cached and response.content:
                    await writer.add(response.content)
                if stream_close:
                    await writer.close()
                else:
                    await writer.flush()
        except LLMUnavailable:
            if writer is not None:
                await writer.flush()  # the event will be retried: its stream goes on
            raise
        except Exception as exc:
            if writer is not None:
                await writer.close(error=f"{type(exc).__name__}: {exc}")
            raise
        model_name = response.model or str(body["model"] or "")
        self.usage.add(agent, model_name, response.usage)
        note_llm_call(model_name, response.usage, bool(response.cached),
                      time.monotonic() - started)  # fmt: skip
        return response

    def _ttl(
        self,
        cache_ttl: float | None,
        kind: str | None,
        temperature: float | None,
        agent: str | None,
    ) -> float:
        if cache_ttl is not None:
            return cache_ttl
        if kind is None and agent is not None and agent in self.settings.llm.agent_cache_ttl:
            return self.settings.llm.agent_cache_ttl[agent]
        return ttl_for(self.settings.llm, temperature, kind)

    async def _stream_writer(self, stream_id: str) -> Any:
        from agentflow.streams import AsyncStreamWriter

        return AsyncStreamWriter(self.redis, stream_id, batch_size=1)

    # -- embeddings ------------------------------------------------------------------------
    async def embed(
        self, texts: list[str], *, model: str | None = None, agent: str | None = None
    ) -> list[list[float]]:
        """Embedding vectors for `texts`, in order; concurrent calls are batched."""
        if not texts:
            return []
        model = model or self.provider.embedding_model
        if self.batcher is not None:
            return await self.batcher.embed(list(texts), model, agent)
        return await self._embed_batch(list(texts), model, agent)

    async def _embed_batch(
        self, texts: list[str], model: str | None, agent: str | None
    ) -> list[list[float]]:
        body = self.provider.embed_body(texts, model)
        data = await self._post(self.provider.embed_url(), body, estimate_tokens(body))
        vectors = self.provider.parse_embed(data)
        prompt = self.provider.embed_usage(data)
        name = str(data.get("model") or model or "")
        usage = Usage(prompt_tokens=prompt, total_tokens=prompt, llm_calls=1,
                      cost_usd=self.prices.cost(name, prompt, 0))  # fmt: skip
        self.usage.add(agent, name, usage)
        return vectors
