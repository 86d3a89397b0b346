"""The Celery tasks of AgentFlow. `agentflow.run_event` is the wire protocol's entry point."""

from __future__ import annotations

from typing import Any

from celery import Task

from agentflow.app import app
from agentflow.broker.queues import RUN_EVENT_TASK
from agentflow.tasks.runner import FanOut, RetryLater, get_runner
from agentflow.tools.fanout import RESUME_TASK
from agentflow.tools.tasks import run_tool

# At-least-once, retried by AgentFlow's own policy, run directly on threads/solo workers.
_EVENT_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
    "typing": False,
    "Strategy": "agentflow.workers.direct:strategy",
}


@app.task(name=RUN_EVENT_TASK, **_EVENT_TASK_OPTIONS)
def run_event(self: Task, event: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one event (a JSON object) through its agent and return the agent result."""
    request = self.request
    raw = event if not args and not kwargs else {"event": event, "args": args, "kwargs": kwargs}
    delivery = request.delivery_info or {}
    try:
        outcome = get_runner().execute(
            raw, request.id, delivery.get("routing_key"), request.headers or {}
        )
    except RetryLater as later:
        raise self.retry(countdown=later.countdown, exc=later) from None
    if isinstance(outcome, FanOut):
        return self.replace(outcome.signature)
    return outcome


@app.task(name=RESUME_TASK, **_EVENT_TASK_OPTIONS)
def resume_event(self: Task, results: Any, event: Any, context: dict[str, Any]) -> dict[str, Any]:
    """A fan-out's chord body: continue the event's agent with its tool results."""
    request = self.request
    delivery = request.delivery_info or {}
    try:
        outcome = get_runner().resume(
            results, event, context, request.id, delivery.get("routing_key"),
            request.headers or {},
        )  # fmt: skip
    except RetryLater as later:
        raise self.retry(countdown=later.countdown, exc=later) from None
    if isinstance(outcome, FanOut):
        return self.replace(outcome.signature)
    return outcome


__all__ = ["resume_event", "run_event", "run_tool"]
