"""Built-in tools: small, real, and used by the demo, the tests and workload W2."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from agentflow.tools.registry import tool


@tool("sleep")
async def sleep(seconds: float = 0.02) -> float:
    """Wait `seconds` (stands in for an I/O-bound tool such as an HTTP lookup)."""
    await asyncio.sleep(max(0.0, min(seconds, 300.0)))
    return seconds


@tool("add", cacheable=True)
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool("count")
def count(n: int, start: int = 0) -> Iterator[dict[str, int]]:
    """Stream `n` items ``{"i": k}`` to the event's stream (a streaming tool)."""
    for k in range(start, start + n):
        yield {"i": k}
