"""Fan-out: an agent's tool calls become a chord that replaces the event's task.

``chord(run_tool × N, resume_event)``: the calls run in parallel on the tools queue; the body
(`agentflow.resume_event`) gets their results and continues the agent. The chord is frozen
with the event's task id, as ``Task.replace`` does, so the body stores its result under the
id the producer holds: `handle.result()` resolves to the agent's final answer. No task ever
waits on another task's result.

Calls of cacheable tools whose result is in Redis do not become tasks: their cached results
travel in the body's context. When nothing is left to run, the body is sent on its own.
"""

from __future__ import annotations

from typing import Any

from celery import chord, group
from celery.canvas import Signature

from agentflow.broker.queues import TOOLS_QUEUE, agent_queue
from agentflow.config import Settings
from agentflow.tools import cache
from agentflow.tools.calls import CallTools, ToolCall, ToolResult
from agentflow.tools.registry import get_tool

RESUME_TASK = "agentflow.resume_event"
_CALLS, _CACHED, _STEP = "_agentflow_calls", "_agentflow_cached", "_agentflow_step"


def build(
    app: Any,
    request: CallTools,
    raw_event: Any,
    agent_name: str,
    event_id: str,
    step: int,
    settings: Settings,
    redis_client: Any,
) -> Signature:
    """The signature that replaces the current task: a chord, or the body alone."""
    cacheable = []
    for call in request.calls:
        try:
            if get_tool(call.name).cacheable:
                cacheable.append(call)
        except Exception:
            continue  # an unknown tool: run_tool reports it as that call's error
    hits = cache.lookup(redis_client, settings.broker.key_prefix, cacheable)
    to_run = [c for c in request.calls if c.id not in hits]
    context = {
        **request.context,
        _CALLS: [c.model_dump() for c in request.calls],
        _CACHED: {k: v.model_dump(mode="json") for k, v in hits.items()},
        _STEP: step,
    }
    resume = app.signature(RESUME_TASK, args=(raw_event, context),
                           queue=agent_queue(agent_name))  # fmt: skip
    if not to_run:
        return app.signature(RESUME_TASK, args=([], raw_event, context),
                             queue=agent_queue(agent_name))  # fmt: skip
    per_tool = settings.tools.queue_per_tool
    header = []
    for call in to_run:
        try:
            queue = get_tool(call.name).queue_name(per_tool)
        except Exception:
            queue = TOOLS_QUEUE
        header.append(app.signature("agentflow.run_tool", args=(call.model_dump(), event_id),
                                    queue=queue))  # fmt: skip
    return chord(group(header), resume)


def results_in_order(raw_results: Any, context: dict[str, Any]) -> list[ToolResult]:
    """The chord's results and the cached ones, in the order the agent asked for them."""
    by_id: dict[str, ToolResult] = {}
    for item in raw_results or []:
        if isinstance(item, dict):
            r = ToolResult.model_validate(item)
            by_id[r.id] = r
    for key, item in (context.get(_CACHED) or {}).items():
        by_id[key] = ToolResult.model_validate(item)
    ordered = []
    for raw_call in context.get(_CALLS) or []:
        call = ToolCall.model_validate(raw_call)
        ordered.append(by_id.get(call.id) or ToolResult(
            id=call.id, name=call.name, error="no result came back for this call"))  # fmt: skip
    return ordered


def user_context(context: dict[str, Any]) -> dict[str, Any]:
    """The agent's own context, without AgentFlow's bookkeeping keys."""
    return {k: v for k, v in context.items() if k not in (_CALLS, _CACHED, _STEP)}


def step_of(context: dict[str, Any]) -> int:
    """Which fan-out this continuation follows (1 for the first)."""
    return int(context.get(_STEP) or 1)
