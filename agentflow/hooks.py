"""Lifecycle hooks: your code, run by the worker around every event.

Register with the decorators; a hook may be sync or async::

    from agentflow import hooks
    from agentflow.errors import EventRefused

    @hooks.before_event
    async def check_budget(event, state):
        if state.get("spent", 0) > 10:
            raise EventRefused("budget spent")       # the event goes to the DLQ

    @hooks.after_event
    def audit(event, state, result, error):
        ...

The five hooks and what they receive, in the order they run:

``before_event(event, state)``
    once per event, before its agent first runs (not again after tool calls);
``before_agent_run(event, state)``
    before every run of the agent: its ``run`` and each ``resume`` after tool calls;
``after_agent_run(event, state, result)``
    after the agent returned: an :class:`~agentflow.AgentResult`, or the
    :class:`~agentflow.CallTools` it asked for;
``agent_error(event, state, error)``
    after the agent raised (a timeout is a :class:`TimeoutError`);
``after_event(event, state, result, error)``
    once the event ended: its stored result, or the error it was dead-lettered with.

Hooks of one kind run in the order they were registered, in the worker process, on its
event loop (keep sync hooks short; use ``async def`` for I/O). A ``before_*`` hook refuses
the event by raising :class:`~agentflow.errors.EventRefused`: the event is dead-lettered
with that reason and its agent does not run. Any other exception from a hook is logged and
counted (statsd ``hooks.errors.<hook>``) and the event goes on: a hook never loses an event.
The state is the read-only view the agent sees.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from agentflow.errors import EventRefused

log = logging.getLogger("agentflow.hooks")

HookName = Literal[
    "before_event", "before_agent_run", "after_agent_run", "agent_error", "after_event"
]
"""The names of the lifecycle points."""
HOOK_NAMES: tuple[HookName, ...] = (
    "before_event", "before_agent_run", "after_agent_run", "agent_error", "after_event",
)  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, list[Callable[..., Any]]] = {name: [] for name in HOOK_NAMES}


def register(name: HookName, fn: F) -> F:
    """Register `fn` as a `name` hook (what the decorators do)."""
    if name not in _registry:
        raise ValueError(f"unknown hook {name!r}; hooks are {', '.join(HOOK_NAMES)}")
    if not callable(fn):
        raise TypeError(f"a hook must be callable, got {fn!r}")
    _registry[name].append(fn)
    return fn


def before_event(fn: F) -> F:
    """Run ``fn(event, state)`` once per event, before its agent first runs."""
    return register("before_event", fn)


def before_agent_run(fn: F) -> F:
    """Run ``fn(event, state)`` before every run of the agent (run and each resume)."""
    return register("before_agent_run", fn)


def after_agent_run(fn: F) -> F:
    """Run ``fn(event, state, result)`` after the agent returned."""
    return register("after_agent_run", fn)


def agent_error(fn: F) -> F:
    """Run ``fn(event, state, error)`` after the agent raised or timed out."""
    return register("agent_error", fn)


def after_event(fn: F) -> F:
    """Run ``fn(event, state, result, error)`` once the event ended (stored or failed)."""
    return register("after_event", fn)


def registered(name: HookName) -> list[Callable[..., Any]]:
    """The hooks registered for `name`, in order (a copy)."""
    return list(_registry[name])


def clear(name: HookName | None = None) -> None:
    """Forget the hooks of `name`, or every hook (tests)."""
    for key in (name,) if name else HOOK_NAMES:
        _registry[key].clear()


def any_registered(name: HookName) -> bool:
    """Whether a hook is registered for `name` (the worker skips the point otherwise)."""
    return bool(_registry[name])


async def run_hooks(name: HookName, *args: Any) -> None:
    """Run the `name` hooks with `args`, in order.

    :class:`EventRefused` from a ``before_*`` hook propagates (the caller dead-letters the
    event); every other exception is logged and counted, and the next hook runs.
    """
    from agentflow.metrics import get_metrics

    for fn in _registry[name]:
        try:
            value = fn(*args)
            if inspect.isawaitable(value):
                await value
        except EventRefused:
            if name.startswith("before_"):
                raise
            log.error("%s hook %s raised EventRefused, which only before_* hooks may",
                      name, _name_of(fn))  # fmt: skip
            get_metrics().incr(f"hooks.errors.{name}")
        except Exception:
            log.exception("%s hook %s raised; the event goes on", name, _name_of(fn))
            get_metrics().incr(f"hooks.errors.{name}")


def _name_of(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
