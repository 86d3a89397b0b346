"""Agents used by the integration tests; workers load them via `[agents] modules`."""

from __future__ import annotations

import os
import time

from agentflow import Agent, AgentResult, Event, State, StateUpdate, agent
from agentflow.broker.connection import get_redis
from agentflow.config import get_settings
from agentflow.tools import CallTools, tool


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


@tool("explode")
def explode(why: str = "no reason") -> None:
    """A tool that always raises."""
    raise ValueError(f"exploded: {why}")


@tool("crawl", timeout=0.3)
def crawl(seconds: float = 2.0) -> float:
    """A tool slower than its own 0.3 s time limit."""
    time.sleep(seconds)
    return seconds


@tool("marked_sleep")
def marked_sleep(seconds: float, mark: str) -> float:
    """Sleep, recording each start under `mark` (redelivery shows as a second start)."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:tool:{mark}", os.getpid())
    time.sleep(seconds)
    return seconds


@agent("greedy")
class Greedy(Agent):
    """Asks for a tool every round, forever (max_steps stops it)."""

    max_steps = 2

    def run(self, event: Event, state: State) -> CallTools:
        return CallTools.of(("add", {"a": 1, "b": 1}))

    def resume(self, event: Event, state: State, context: dict, results: list) -> CallTools:
        return CallTools.of(("add", {"a": len(results), "b": 1}))


@agent("upper", blocking=False)
def upper(event: Event, state: State) -> dict[str, str]:
    """Upper-case `data.input.text` (a previous step's output) or `data.text`."""
    source = event.data.get("input") or event.data
    return {"text": str(source.get("text", "")).upper()}


@agent("exclaim", blocking=False)
def exclaim(event: Event, state: State) -> dict[str, str]:
    """Append "!" to `data.input.text` or `data.text`."""
    source = event.data.get("input") or event.data
    return {"text": str(source.get("text", "")) + "!"}


@agent("climb", blocking=False)
def climb(event: Event, state: State) -> dict[str, object]:
    """n + 1 each time it runs; done once n reaches `data.target`."""
    n = int((event.data.get("input") or {}).get("n", 0)) + 1
    return {"n": n, "done": n >= int(event.data.get("target", 3))}
