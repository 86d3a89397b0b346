"""The Agent base class: `run(event, state)` may be sync or async and returns a result."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from agentflow.models import AgentResult, Event, Signal
from agentflow.state import State
from agentflow.tools.calls import ToolResult

RunResult = AgentResult | dict[str, Any] | Any


class Agent:
    """Subclass and implement :meth:`run`; register with ``@agent("name")``.

    `run` receives the event and a read-only view of the session state. To change state,
    call ``state.clone()``, change the clone, and return ``AgentResult(state_updates=
    clone.delta(), ...)``. Any other return value becomes the result's `output`.
    """

    name: str = ""
    description: str = ""
    timeout: float | None = None
    """Seconds this agent may run; None means `[runner] event_timeout`."""
    blocking: bool = True
    """For a sync `run`: True (default) when it may block (I/O, CPU work), so a worker with
    the asyncio pool runs it on a helper thread; False when it returns at once and may run
    on the worker's event loop itself. Ignored for async agents."""

    max_steps: int | None = None
    """How many times the agent may ask for tools; None means `[tools] max_steps`."""

    def run(self, event: Event, state: State) -> RunResult | Awaitable[RunResult]:
        """Handle one event; return a result, or ``CallTools(...)`` to fan out tool calls."""
        raise NotImplementedError

    def resume(
        self, event: Event, state: State, context: dict[str, Any], results: list[ToolResult]
    ) -> RunResult | Awaitable[RunResult]:
        """Continue after the tool calls asked for by `run` (or a previous `resume`) ran.

        `results` are in the order of the calls; a failed or timed-out call has `error` set.
        Return the final result, or ``CallTools(...)`` again for another round.
        """
        raise NotImplementedError(f"agent {self.name!r} asked for tools but has no resume()")

    def on_signal(
        self, event: Event, state: State, signal: Signal
    ) -> RunResult | Awaitable[RunResult]:
        """Continue after ``WaitFor(...)``: `signal` is what arrived (``signal.timed_out`` when
        the wait's timeout passed first). Return the final result, or ``WaitFor`` again."""
        raise NotImplementedError(f"agent {self.name!r} waits for a signal but has no on_signal()")

    @property
    def waits(self) -> bool:
        """True when the agent can be resumed by a signal (it has ``on_signal``)."""
        return type(self).on_signal is not Agent.on_signal

    @property
    def signal_is_async(self) -> bool:
        """True when ``on_signal`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.on_signal)

    @property
    def is_async(self) -> bool:
        """True when `run` is a coroutine function."""
        return inspect.iscoroutinefunction(self.run)

    @property
    def queue(self) -> str:
        """This agent's queue, ``agentflow.agent.<name>``."""
        from agentflow._redis.queues import agent_queue

        return agent_queue(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FunctionAgent(Agent):
    """An agent made from a plain function ``fn(event, state)``, sync or async."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Event, State], Any],
        *,
        description: str = "",
        timeout: float | None = None,
        blocking: bool = True,
    ) -> None:
        self.name = name
        self.fn = fn
        self.description = description or (fn.__doc__ or "").strip()
        self.timeout = timeout
        self.blocking = blocking
        self.signal_fn: Callable[[Event, State, Signal], Any] | None = None
        """``fn(event, state, signal)``, registered with ``@on_signal("name")``."""

    def run(self, event: Event, state: State) -> Any:
        """Call the wrapped function."""
        return self.fn(event, state)

    def on_signal(self, event: Event, state: State, signal: Signal) -> Any:
        """Call the function registered with ``@on_signal``."""
        if self.signal_fn is None:
            return super().on_signal(event, state, signal)
        return self.signal_fn(event, state, signal)

    @property
    def waits(self) -> bool:
        return self.signal_fn is not None

    @property
    def signal_is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.signal_fn)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def to_result(value: Any, event: Event, agent: str) -> AgentResult:
    """Normalise whatever an agent returned into an AgentResult for `event`."""
    result = value if isinstance(value, AgentResult) else AgentResult(output=value)
    result.event_id = event.id
    result.agent = agent
    return result
