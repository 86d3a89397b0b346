"""Queue names and kombu declarations: one queue per agent, one for tools, one default."""

from __future__ import annotations

from collections.abc import Iterable

from kombu import Exchange, Queue

AGENT_QUEUE_PREFIX = "agentflow.agent."
TOOLS_QUEUE = "agentflow.tools"
DEFAULT_QUEUE = "agentflow.default"
RUN_EVENT_TASK = "agentflow.run_event"
SIGNAL_TASK = "agentflow.signal_event"
"""Resumes a suspended event (``WaitFor``) with its signal or timeout, on the agent's queue."""


def agent_queue(agent: str) -> str:
    """The queue that carries events for `agent`: ``agentflow.agent.<agent>``."""
    return f"{AGENT_QUEUE_PREFIX}{agent}"


def declare(name: str) -> Queue:
    """A durable direct queue whose exchange and routing key carry its own name."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def all_queues(agent_names: Iterable[str], extra: Iterable[str] = ()) -> tuple[Queue, ...]:
    """Declarations for the default queue, the tools queue and every agent's queue."""
    names = [DEFAULT_QUEUE, TOOLS_QUEUE, *(agent_queue(a) for a in sorted(agent_names)), *extra]
    return tuple(declare(n) for n in dict.fromkeys(names))
