"""Rate limits shared by every worker: requests and tokens per minute, as Redis token buckets.

Each provider key (provider, deployment or model, and a hash of the API key — never the key
itself) has up to two buckets, ``…:rpm`` and ``…:tpm``, refilled continuously at
``limit / 60`` per second up to ``limit``. One Lua script takes from both buckets or from
neither, using Redis's clock, so workers on different machines agree. When a bucket is short
the caller sleeps for the time the script says it needs and tries again, up to
`rate_limit_max_wait`; past that it raises :class:`~agentflow.errors.RateLimited`.

The token cost of a request is estimated before it is sent (characters / 4 of the messages
plus `max_tokens`) and corrected once the reply reports its real usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import Any

import redis.asyncio as aioredis

from agentflow.errors import RateLimited
from agentflow.metrics import get_metrics

# KEYS: rpm bucket, tpm bucket. ARGV: rpm limit, tpm limit, tpm cost (limits 0 = no limit).
# Returns 0 when both buckets paid, else the milliseconds to wait before trying again.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local costs = {1, tonumber(ARGV[3])}
local levels = {}
local wait = 0
for i = 1, 2 do
  local limit = limits[i]
  if limit > 0 then
    local cost = math.min(costs[i], limit)
    local rate = limit / 60.0
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens = tonumber(state[1]) or limit
    local ts = tonumber(state[2]) or now
    tokens = math.min(limit, tokens + math.max(0, now - ts) * rate)
    levels[i] = tokens
    if tokens < cost then
      wait = math.max(wait, (cost - tokens) / rate)
    end
  end
end
if wait > 0 then return math.ceil(wait * 1000) end
for i = 1, 2 do
  local limit = limits[i]
  if limit > 0 then
    local cost = math.min(costs[i], limit)
    redis.call('HSET', KEYS[i], 'tokens', levels[i] - cost, 'ts', now)
    redis.call('EXPIRE', KEYS[i], 120)
  end
end
return 0
"""


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap upper-ish estimate of a request's tokens: characters / 4, plus max_tokens."""
    chars = 0
    for message in body.get("messages") or []:
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else len(json.dumps(content))
    for text in body.get("input") or []:
        chars += len(str(text))
    return math.ceil(chars / 4) + int(body.get("max_tokens") or 0)


def limiter_key(prefix: str, provider_key: str, api_key: str | None) -> str:
    """The bucket key prefix of one provider key; the API key only enters as a short hash."""
    digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
    return f"{prefix}:ratelimit:{provider_key}:{digest}"


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets of one provider key."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        max_wait: float,
    ) -> None:
        self.redis = client
        self.rpm_key = key + ":rpm"
        self.tpm_key = key + ":tpm"
        self.rpm = requests_per_minute or 0
        self.tpm = tokens_per_minute or 0
        self.max_wait = max_wait
        self._take = client.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        """True when either limit is configured."""
        return bool(self.rpm or self.tpm)

    async def acquire(self, tokens: int) -> float:
        """Take one request and `tokens` tokens, waiting as needed; returns the time waited."""
        if not self.enabled:
            return 0.0
        waited = 0.0
        while True:
            wait_ms = int(
                await self._take(
                    keys=[self.rpm_key, self.tpm_key], args=[self.rpm, self.tpm, tokens]
                )
            )
            if wait_ms <= 0:
                if waited:
                    get_metrics().timing("llm.ratelimit.wait", waited * 1000)
                return waited
            wait = wait_ms / 1000
            if waited + wait > self.max_wait:
                get_metrics().incr("llm.ratelimit.refused")
                raise RateLimited(
                    f"shared rate limit spent (rpm={self.rpm or '-'}, tpm={self.tpm or '-'}); "
                    f"next slot in {wait:.2f}s, beyond rate_limit_max_wait={self.max_wait:g}s",
                    retry_after=wait,
                )
            await asyncio.sleep(wait)
            waited += wait

    async def adjust(self, tokens: int) -> None:
        """Correct the token bucket by `tokens` (positive: give back; negative: charge more)."""
        if self.tpm and tokens:
            await self.redis.hincrbyfloat(self.tpm_key, "tokens", tokens)  # type: ignore[misc]
