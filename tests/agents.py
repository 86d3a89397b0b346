"""Agents used by the integration tests; workers load them via `[agents] modules`."""

from __future__ import annotations

import os
import time

from agentflow import AgentResult, Event, State, StateUpdate, agent
from agentflow.broker.connection import get_redis
from agentflow.config import get_settings


@agent("sleepy")
def sleepy(event: Event, state: State) -> dict[str, object]:
    """Sleep `data.seconds`, then return which process ran the event."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:started:{event.id}", os.getpid())
    time.sleep(float(event.data.get("seconds", 0.1)))
    return {"pid": os.getpid(), "slept": event.data.get("seconds", 0.1)}


@agent("boom")
def boom(event: Event, state: State) -> None:
    """Always raise."""
    raise RuntimeError(f"boom: {event.data.get('why', 'no reason')}")


@agent("tally")
def tally(event: Event, state: State) -> AgentResult:
    """Add `data.n` to the session's `total`, and record the event id in state."""
    n = int(event.data.get("n", 1))
    return AgentResult(
        output={"seen": state.get("total", 0)},
        state_updates=StateUpdate(incr={"total": n}, set={f"seen:{event.id}": True}),
    )
