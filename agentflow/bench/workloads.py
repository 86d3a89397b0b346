"""The standard workloads: which agent runs and what each event carries.

- ``W0``: the built-in ``noop`` agent — the pipeline's own cost.
- ``W1``: the built-in ``chat`` agent, one LLM call (50 ms on the mock LLM), cache off.
- ``W2``: an agent that fans out 3 tools of 20 ms in parallel (a chord), then one 50 ms LLM
  call. It needs the tools layer (``agentflow.tools``); :func:`available` says whether it is
  there.
- ``W2http``: W2 whose 3 tools each make a real HTTP call (GET to the mock server's
  ``/tool``, which answers after 20 ms) through :mod:`agentflow.http`.
- ``W2httpx``: the same calls through one ``httpx.AsyncClient()`` per worker process, as a
  user writes them without AgentFlow's client.
- ``W3``: W1 with session state: each event belongs to one of 1,000 sessions, so the worker
  reads the session's state before the call and writes the updated history after it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentflow.models import Event


@dataclass(frozen=True)
class Workload:
    """A named workload: the agent it drives and the events it sends."""

    name: str
    agent: str
    description: str
    data: Callable[[int], dict[str, Any]]
    needs_llm: bool = False
    needs_module: str | None = None
    sessions: int = 0
    """Events spread over this many sessions (0: no session state)."""
    modules: tuple[str, ...] = ()
    """Modules the workers must import (``[agents] modules``) for its agent or tools."""

    def available(self) -> str | None:
        """None when it can run here, else why not."""
        if self.needs_module and importlib.util.find_spec(self.needs_module) is None:
            return f"{self.name} needs {self.needs_module}, which is not installed"
        return None

    def events(self, start: int = 0) -> Callable[[], Event]:
        """A factory of fresh events (new ids) for this workload."""
        counter = itertools.count(start)

        def make() -> Event:
            i = next(counter)
            session = f"bench-{i % self.sessions}" if self.sessions else None
            return Event(type=f"bench.{self.name.lower()}", agent=self.agent, data=self.data(i),
                         session_id=session)  # fmt: skip

        return make


_W1 = Workload(
    "W1",
    "chat",
    "one 50 ms mock-LLM call per event",
    lambda i: {"prompt": f"benchmark request {i}", "cache": False},
    needs_llm=True,
)

WORKLOADS: dict[str, Workload] = {
    "W0": Workload("W0", "noop", "no-op agent: the pipeline's own cost", lambda i: {}),
    "W1": _W1,
    "W2": Workload(
        "W2",
        "bench_fanout",
        "3 parallel 20 ms tools (chord), then one 50 ms LLM call",
        lambda i: {"prompt": f"benchmark request {i}", "tool_seconds": 0.02, "tools": 3},
        needs_llm=True,
        needs_module="agentflow.tools",
    ),
    "W2http": Workload(
        "W2http",
        "bench_fanout",
        "3 parallel HTTP tools (GET, 20 ms on the mock) via agentflow.http, then one LLM call",
        lambda i: {
            "prompt": f"benchmark request {i}",
            "tool_seconds": 0.02,
            "tools": 3,
            "tool": "bench_http",
        },
        needs_llm=True,
        needs_module="agentflow.http",
        modules=("agentflow.bench.http_tools",),
    ),
    "W2httpx": Workload(
        "W2httpx",
        "bench_fanout",
        "W2http's calls via one httpx.AsyncClient() per worker process (a user's own code)",
        lambda i: {
            "prompt": f"benchmark request {i}",
            "tool_seconds": 0.02,
            "tools": 3,
            "tool": "bench_httpx",
        },
        needs_llm=True,
        needs_module="agentflow.http",
        modules=("agentflow.bench.http_tools",),
    ),
    "W3": dataclasses.replace(
        _W1,
        name="W3",
        description="W1 with a session state read and update per event, over 1,000 sessions",
        sessions=1000,
    ),
}


def for_agent(agent: str, data: dict[str, Any] | None = None) -> Workload:
    """A workload for any agent name: a standard one if it matches, else `data` per event."""
    for w in WORKLOADS.values():
        if w.agent == agent and data is None:
            return w
    payload = dict(data or {})
    return Workload("custom", agent, f"agent {agent}", lambda i: dict(payload))
