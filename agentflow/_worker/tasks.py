"""The Celery tasks of AgentFlow. `agentflow.run_event` is the wire protocol's entry point.

On a worker with AgentFlow's pool (the default) these never run as functions: the pool
runs the same work as coroutines on its event loop (:mod:`agentflow._worker.asyncio_pool`).
Their bodies are the *pool path* — prefork, solo, ``-P threads`` or
``[runner] pool = "threads"`` — and run the same runner coroutines on their process's
loop, so every path gives the same result, metrics, dead letters and signals.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject

from agentflow import _aio
from agentflow._redis.queues import RUN_EVENT_TASK, SIGNAL_TASK
from agentflow.celery_app import app
from agentflow.errors import AgentError, EventRejected
from agentflow.tools.execute import RUN_TOOL_TASK
from agentflow.tools.fanout import RESUME_TASK

# At-least-once: acked after the result is stored; a lost worker's message is redelivered.
_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
    "typing": False,
}


def run_on_pool(task: Task, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run one request's work through the runner from a pool's thread or process."""
    from agentflow._worker.runner import (
        Done,
        FannedOut,
        Job,
        RetryLater,
        Revoked,
        Suspended,
        get_runner,
    )

    request = task.request
    fields = dict(request.__dict__)
    embed = {k: fields.get(k) for k in ("callbacks", "errbacks", "chain", "chord", "group")}
    queue = (request.delivery_info or {}).get("routing_key")
    job = Job(str(request.id), name, list(args), dict(kwargs), embed, fields, queue)
    try:
        outcome = _aio.run(get_runner().run(job))
    except RetryLater as later:
        raise task.retry(countdown=later.countdown, exc=later) from None
    except (EventRejected, AgentError):
        raise  # dead-lettered: the task fails with the reason
    except Exception as exc:
        # Not the event's fault (Redis unreachable, say): back to the queue, as for a
        # lost worker; [runner] max_redeliveries caps how often.
        raise Reject(exc, requeue=True) from exc
    if isinstance(outcome, FannedOut | Suspended):
        raise Ignore()  # replaced by the chord (as ``Task.replace`` does), or waiting
    if isinstance(outcome, Revoked):
        task.backend.mark_as_revoked(request.id, outcome.reason, request=request)
        raise Ignore()
    assert isinstance(outcome, Done)
    return outcome.result


@app.task(name=RUN_EVENT_TASK, **_TASK_OPTIONS)
def run_event(self: Task, event: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Run one event (a JSON object) through its agent and return the agent result."""
    return run_on_pool(self, RUN_EVENT_TASK, [event, *args], kwargs)


@app.task(name=RESUME_TASK, **_TASK_OPTIONS)
def resume_event(self: Task, results: Any, event: Any, context: dict[str, Any]) -> Any:
    """A fan-out's chord body: continue the event's agent with its tool results."""
    return run_on_pool(self, RESUME_TASK, [results, event, context], {})


@app.task(name=SIGNAL_TASK, **_TASK_OPTIONS)
def signal_event(self: Task, event_id: str, token: str, signal: Any = None) -> Any:
    """Resume an event that waits for a signal (``WaitFor``) with its signal or timeout."""
    return run_on_pool(self, SIGNAL_TASK, [event_id, token, signal], {})


@app.task(name=RUN_TOOL_TASK, **_TASK_OPTIONS)
def run_tool(self: Task, call: Any, event_id: str | None = None) -> Any:
    """Run one tool call; the result (never an exception) goes to the chord's body."""
    return run_on_pool(self, RUN_TOOL_TASK, [call, event_id], {})


__all__ = ["resume_event", "run_event", "run_tool", "signal_event"]
