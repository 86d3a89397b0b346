"""The run context: what agent code can ask about the event it is running.

``agentflow.current_run()`` gives the :class:`RunContext` of the event the calling code runs
for (async agents, sync agents on their helper thread, tools called from them). Long sync
agents should call :meth:`RunContext.check` now and then: it raises :class:`Cancelled` once
the event was cancelled or its time is up, so the agent stops at a point of its choosing
instead of being stopped wherever it is.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

from agentflow.errors import AgentFlowError


class Cancelled(AgentFlowError):
    """The event this code runs for was cancelled, or its time limit passed."""


@dataclass
class RunContext:
    """One run of one event's agent."""

    event_id: str
    task_id: str
    agent: str
    deadline: float
    """``time.monotonic()`` value after which the run is stopped."""
    steps: Any = field(default=None, repr=False)
    """The run's trace steps (:class:`agentflow.timeline.Steps`) when tracing is on."""
    _cancelled: bool = field(default=False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the event was cancelled or its time limit passed."""
        return self._cancelled or time.monotonic() >= self.deadline

    def cancel(self) -> None:
        """Mark the run cancelled (the worker does this)."""
        self._cancelled = True

    def remaining(self) -> float:
        """Seconds left before the time limit (0 when it passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`Cancelled` if the run should stop."""
        if self.cancelled:
            raise Cancelled(f"event {self.event_id} was cancelled or ran out of time")


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "agentflow_run", default=None
)


def current_run() -> RunContext | None:
    """The run context of the calling code, or None outside an event."""
    return _current.get()


def enter(ctx: RunContext) -> contextvars.Token[RunContext | None]:
    """Make `ctx` current (the worker does this around an agent call)."""
    return _current.set(ctx)


def leave(token: contextvars.Token[RunContext | None]) -> None:
    """Undo :func:`enter`."""
    _current.reset(token)
