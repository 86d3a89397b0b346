"""Results of cacheable tools in Redis: a hit skips the task altogether."""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import redis

from agentflow.tools.calls import ToolCall, ToolResult


def cache_key(prefix: str, call: ToolCall) -> str:
    """``<prefix>:toolcache:<tool>:<sha256 of the canonical JSON arguments>``."""
    canonical = json.dumps(call.args, sort_keys=True, separators=(",", ":"), default=str)
    return f"{prefix}:toolcache:{call.name}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def lookup(client: redis.Redis, prefix: str, calls: list[ToolCall]) -> dict[str, ToolResult]:
    """Cached results of `calls` by call id (one MGET)."""
    if not calls:
        return {}
    return _found(calls, cast(list[Any], client.mget([cache_key(prefix, c) for c in calls])))


async def lookup_async(client: Any, prefix: str, calls: list[ToolCall]) -> dict[str, ToolResult]:
    """:func:`lookup` on a ``redis.asyncio`` client."""
    if not calls:
        return {}
    raws = await client.mget([cache_key(prefix, c) for c in calls])
    return _found(calls, raws)


def _found(calls: list[ToolCall], raws: list[Any]) -> dict[str, ToolResult]:
    found: dict[str, ToolResult] = {}
    for call, raw in zip(calls, raws, strict=True):
        if raw is not None:
            found[call.id] = ToolResult(id=call.id, name=call.name, output=json.loads(raw),
                                        cached=True)  # fmt: skip
    return found


def store(client: redis.Redis, prefix: str, call: ToolCall, output: Any, ttl: float) -> None:
    """Keep a successful output for `ttl` seconds."""
    client.set(cache_key(prefix, call), json.dumps(output, default=str), ex=max(1, int(ttl)))


async def store_async(client: Any, prefix: str, call: ToolCall, output: Any, ttl: float) -> None:
    """:func:`store` on a ``redis.asyncio`` client."""
    await client.set(cache_key(prefix, call), json.dumps(output, default=str),
                     ex=max(1, int(ttl)))  # fmt: skip
