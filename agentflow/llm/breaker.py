"""A circuit breaker shared by every worker through Redis: closed, open, half-open.

State lives in one hash per provider and deployment (``<prefix>:breaker:<key>``): after
`max_failures` consecutive failures the breaker opens for `timeout` seconds and calls fail
fast with :class:`~agentflow.errors.CircuitOpen`; then one probe call is let through
(half-open) — success closes it, failure opens it again.

A process that saw the breaker closed trusts that for `recheck` seconds (default 0.1 s)
before asking Redis again: at hundreds of calls a second a round trip per call cost more
than the call's own bookkeeping, and a breaker opened elsewhere is seen here within
`recheck`. A failure seen here always goes to Redis at once.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from agentflow.errors import CircuitOpen
from agentflow.metrics import get_metrics

# KEYS: hash. ARGV: now, probe_timeout. Returns 1 closed, 2 half-open probe, 0 open.
_ALLOW = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return 1 end
local now = tonumber(ARGV[1])
if now < open_until then return 0 end
if redis.call('HSETNX', KEYS[1], 'probe', now) == 1 then return 2 end
if now - tonumber(redis.call('HGET', KEYS[1], 'probe')) > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'probe', now)
  return 2
end
return 0
"""
# KEYS: hash. ARGV: ok(1/0), now, max_failures, timeout. Returns the new open_until (0 closed).
_RECORD = """
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) return 0 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local probing = redis.call('HEXISTS', KEYS[1], 'probe') == 1
if failures >= tonumber(ARGV[3]) or probing then
  local open_until = tonumber(ARGV[2]) + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'open_until', open_until, 'failures', 0)
  redis.call('HDEL', KEYS[1], 'probe')
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 10 + 60))
  return open_until
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 10 + 60))
return 0
"""


class CircuitBreaker:
    """The breaker of one provider+deployment, shared through Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        max_failures: int,
        timeout: float,
        recheck: float = 0.1,
    ) -> None:
        self.key = key
        self.name = key.rsplit(":", 1)[-1].replace(".", "_")
        self.recheck = recheck
        self._closed_until = 0.0
        self._checking = False
        self.max_failures = max_failures
        self.timeout = timeout
        self._allow = client.register_script(_ALLOW)
        self._record = client.register_script(_RECORD)
        self._dirty = True  # a failure or probe seen here: successes must reset the hash

    async def before_call(self) -> None:
        """Raise CircuitOpen while the breaker is open; otherwise let the call through."""
        now = time.monotonic()
        if now < self._closed_until or (self._checking and self._closed_until):
            return  # closed a moment ago, or being rechecked by another call right now
        self._checking = True
        try:
            state = int(await self._allow(keys=[self.key], args=[time.time(), self.timeout]))
        finally:
            self._checking = False
        if state == 1 and not self._dirty:
            self._closed_until = now + self.recheck
        elif state != 1:
            self._closed_until = 0.0
        if state == 0:
            get_metrics().incr(f"llm.breaker.rejected.{self.name}")
            raise CircuitOpen(f"circuit open for {self.key.rsplit(':', 2)[-2:]}",
                              retry_after=self.timeout)  # fmt: skip
        if state == 2:
            self._dirty = True

    async def record(self, ok: bool) -> None:
        """Count a success (closes) or a failure (may open)."""
        if ok and not self._dirty:
            return
        if not ok:
            self._closed_until = 0.0
        args = [1 if ok else 0, time.time(), self.max_failures, self.timeout]
        open_until = float(await self._record(keys=[self.key], args=args) or 0)
        self._dirty = not ok
        metrics = get_metrics()
        if open_until:
            metrics.incr(f"llm.breaker.opened.{self.name}")
        # 1 while this process last saw the breaker open, 0 once a success closed it.
        metrics.gauge(f"llm.breaker.open.{self.name}", 1 if open_until else 0)
