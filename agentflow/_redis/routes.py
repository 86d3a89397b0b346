"""Route `agentflow.run_event` to its agent's queue: by `agent`, else by `type` via config."""

from __future__ import annotations

from typing import Any

from agentflow._redis.queues import RUN_EVENT_TASK, agent_queue
from agentflow.config import Settings, get_settings
from agentflow.errors import UnknownAgent


def resolve_agent(event: dict[str, Any], settings: Settings | None = None) -> str:
    """The agent an event goes to: its `agent`, else `[runner] routes[type]`, else the default."""
    name = event.get("agent")
    if name:
        return str(name)
    s = settings or get_settings()
    by_type = s.runner.routes.get(str(event.get("type", "")))
    if by_type:
        return by_type
    if s.runner.default_agent:
        return s.runner.default_agent
    raise UnknownAgent(
        f"event of type {event.get('type')!r} names no agent and no route in [runner] routes matches"
    )


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str] | None:
    """Celery router: events that a plain `send_task` publishes go to their agent's queue."""
    if name != RUN_EVENT_TASK or options.get("queue"):
        return None
    event = args[0] if args else (kwargs or {}).get("event")
    if not isinstance(event, dict):
        return None
    try:
        return {"queue": agent_queue(resolve_agent(event))}
    except UnknownAgent:
        return None
