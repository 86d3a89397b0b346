"""How one tool call runs (the work of the `agentflow.run_tool` task, on the tools queue).

A call never raises: a failing, timed-out or unknown tool gives a result with `error`, so
the chord it belongs to always completes and the agent decides what to do (a chord whose
header task fails never calls its body — one of the Celery pitfalls this avoids). A worker
killed mid-call loses nothing: the task is acked late and redelivered.

Streaming tools (generators) send their items to the event's Redis stream in batches of
`[tools] stream_batch_size`; their result's output is ``{"streamed": <count>}``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

from pydantic import ValidationError

from agentflow._redis.connection import get_async_redis, get_redis
from agentflow._worker.stoppable import StoppableThreads, Stopped
from agentflow.config import get_settings
from agentflow.errors import ToolError
from agentflow.metrics import get_metrics
from agentflow.tools import cache
from agentflow.tools.calls import ToolCall, ToolResult
from agentflow.tools.registry import Tool, get_tool

RUN_TOOL_TASK = "agentflow.run_tool"


def _threads() -> StoppableThreads:
    """Daemon threads for sync tools: a timed-out call is stopped, not left running."""
    global _tool_threads
    if _tool_threads is None:
        _tool_threads = StoppableThreads(
            "tool", max_abandoned=get_settings().runner.max_stuck_threads
        )
    return _tool_threads


_tool_threads: StoppableThreads | None = None


def _stream_sync(tool: Tool, args: dict[str, Any], event_id: str, timeout: float) -> Any:
    """A generator tool, on a helper thread: items to the stream in batches."""
    from agentflow.streams import StreamWriter

    settings = get_settings()
    deadline = time.monotonic() + timeout
    writer = StreamWriter(get_redis(), event_id, prefix=settings.broker.key_prefix,
                          batch_size=settings.tools.stream_batch_size)  # fmt: skip
    for item in tool.call(args):
        writer.add(item)
        if time.monotonic() > deadline:
            writer.flush()
            raise TimeoutError(timeout)
    writer.flush()
    return {"streamed": writer.count}


async def _stream_async(tool: Tool, args: dict[str, Any], event_id: str) -> Any:
    """An async generator tool, on the loop."""
    from agentflow._redis.connection import get_async_redis
    from agentflow.streams import AsyncStreamWriter

    settings = get_settings()
    writer = AsyncStreamWriter(get_async_redis(), event_id, prefix=settings.broker.key_prefix,
                               batch_size=settings.tools.stream_batch_size)  # fmt: skip
    async for item in tool.call(args):
        await writer.add(item)
    await writer.flush()
    return {"streamed": writer.count}


async def _invoke(tool: Tool, args: dict[str, Any], event_id: str | None, timeout: float) -> Any:
    if tool.is_streaming:
        if event_id is None:
            raise ToolError(f"streaming tool {tool.name!r} needs an event to stream to")
        if inspect.isasyncgenfunction(tool.fn):
            return await asyncio.wait_for(_stream_async(tool, args, event_id), timeout)
        return await _threads().run(_stream_sync, tool, args, event_id, timeout,
                                    timeout=timeout + 1)  # fmt: skip
    if tool.is_async:
        return await asyncio.wait_for(tool.call(args), timeout)
    value = await _threads().run(tool.call, args, timeout=timeout)
    if inspect.isawaitable(value):
        value = await asyncio.wait_for(_awaited(value), timeout)
    return value


async def _awaited(value: Any) -> Any:
    return await value


async def execute_tool_async(raw: Any, event_id: str | None = None) -> ToolResult:
    """Run one call on the process loop; always a ToolResult (errors and timeouts included).

    Async tools run on the loop, sync ones on a helper thread; the time limit is the tool's
    `timeout` or `[tools] timeout`.
    """
    started = time.time()
    try:
        call = ToolCall.model_validate(raw)
    except ValidationError as exc:
        return ToolResult(id=str((raw or {}).get("id", "?")) if isinstance(raw, dict) else "?",
                          name="?", error=f"invalid tool call: {exc.errors()[0]['msg']}",
                          started=started, finished=time.time())  # fmt: skip
    settings = get_settings()
    error: str | None = None
    output: Any = None
    try:
        tool = get_tool(call.name)
        timeout = tool.timeout or settings.tools.timeout
        try:
            output = await _invoke(tool, call.args, event_id, timeout)
        except (TimeoutError, Stopped):
            error = f"tool {call.name!r} timed out after {timeout:g}s"
        if error is None and tool.cacheable:
            await cache.store_async(get_async_redis(), settings.broker.key_prefix, call, output,
                                    tool.cache_ttl or settings.tools.cache_ttl)  # fmt: skip
    except ToolError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"tool {call.name!r} raised {type(exc).__name__}: {exc}"
    finished = time.time()
    metrics = get_metrics()
    metrics.timing(f"tool.call.{call.name}", (finished - started) * 1000)
    if error is not None:
        metrics.incr(f"tool.errors.{call.name}")
    return ToolResult(id=call.id, name=call.name, output=output, error=error,
                      seconds=finished - started, started=started, finished=finished)  # fmt: skip
