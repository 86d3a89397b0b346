"""Agents for the delayed-event and wait-for-signal tests (tests/integration/test_scheduled.py,
test_waiting.py); workers load them with ``tests.agents`` (see ``LATER_MODULES``)."""

from __future__ import annotations

import os
import time

from agentflow import (
    Agent,
    AgentResult,
    Event,
    Signal,
    State,
    StateUpdate,
    WaitFor,
    agent,
    on_signal,
)
from agentflow._redis.connection import get_redis
from agentflow.config import get_settings

LATER_MODULES = '["tests.agents", "tests.agents_later"]'
"""``AGENTFLOW_AGENTS__MODULES`` for workers that serve these agents."""


@agent("stamp", blocking=False)
def stamp(event: Event, state: State) -> dict[str, object]:
    """Record each run of the event and return when it ran (epoch seconds)."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:runs:{event.id}", os.getpid())
    return {"ran_at": time.time(), "data": event.data}


def _record(kind: str, event: Event) -> None:
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:{kind}:{event.id}", os.getpid())


@agent("approver")
class Approver(Agent):
    """Waits for "approval" (for `data.timeout` seconds, if given), then says what resumed it."""

    async def run(self, event: Event, state: State) -> WaitFor:
        _record("runs", event)
        return WaitFor("approval", timeout=event.data.get("timeout"),
                       context={"ask": event.data.get("ask")})  # fmt: skip

    async def on_signal(self, event: Event, state: State, signal: Signal) -> AgentResult:
        _record("resumes", event)
        return AgentResult(
            output={
                "signal": signal.name,
                "payload": signal.payload,
                "timed_out": signal.timed_out,
                "context": signal.context,
                "pid": os.getpid(),
            },
            state_updates=StateUpdate(incr={"approvals": 1}),
        )


@agent("gatekeeper", blocking=False)
def gatekeeper(event: Event, state: State) -> WaitFor:
    """A function agent that waits for "open"; a payload "again" makes it wait once more."""
    _record("runs", event)
    return WaitFor("open", context={"n": 1})


@on_signal("gatekeeper")
def gatekeeper_opened(event: Event, state: State, signal: Signal) -> object:
    """Resumes gatekeeper."""
    _record("resumes", event)
    if signal.payload == "again":
        return WaitFor("open", context={"n": signal.context["n"] + 1})
    return {"opened_with": signal.payload, "n": signal.context["n"]}


@agent("no_resume", blocking=False)
def no_resume(event: Event, state: State) -> WaitFor:
    """Waits, but nothing could resume it."""
    return WaitFor("never")
