"""The agent registry: agents register by decorator or by modules listed in `[agents] modules`."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from agentflow.agents.base import Agent, FunctionAgent
from agentflow.errors import ConfigError, UnknownAgent

_lock = threading.Lock()
_agents: dict[str, Agent] = {}
_loaded_modules: set[str] = set()

A = TypeVar("A", bound=Callable[..., Any])


def register_agent(agent: Agent, *, replace: bool = False) -> Agent:
    """Add an agent instance under its name."""
    with _lock:
        existing = _agents.get(agent.name)
        if existing is not None and not replace and type(existing) is not type(agent):
            raise ConfigError(f"agent {agent.name!r} is already registered by {existing!r}")
        _agents[agent.name] = agent
    return agent


@overload
def agent(name: str, **options: Any) -> Callable[[A], A]: ...
@overload
def agent(name: A) -> A: ...
def agent(name: Any, **options: Any) -> Any:
    """Register an Agent subclass or a plain (sync or async) function ``fn(event, state)``.

    Use as ``@agent("name")`` or bare ``@agent`` (the name is then the class or function name).
    """

    def decorate(target: A, agent_name: str) -> A:
        if inspect.isclass(target) and issubclass(target, Agent):
            instance = target(**options)
            instance.name = agent_name
            register_agent(instance)
        elif callable(target):
            register_agent(FunctionAgent(agent_name, target, **options))
        else:
            raise TypeError(f"@agent needs an Agent subclass or a function, got {target!r}")
        return target

    if isinstance(name, str):
        return lambda target: decorate(target, name)
    default = getattr(name, "name", None) if inspect.isclass(name) else None
    return decorate(name, default if isinstance(default, str) and default else name.__name__)


def get_agent(name: str) -> Agent:
    """The agent registered as `name`, or UnknownAgent."""
    try:
        return _agents[name]
    except KeyError:
        raise UnknownAgent(f"no agent named {name!r} (registered: {sorted(_agents)})") from None


def agent_names() -> list[str]:
    """Every registered agent's name, sorted."""
    return sorted(_agents)


def load_modules(modules: Iterable[str]) -> None:
    """Import modules so that their @agent and @tool decorators run (once each)."""
    for module in modules:
        if module in _loaded_modules:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"[agents] modules: cannot import {module!r}: {exc}") from exc
        _loaded_modules.add(module)


def unregister(name: str) -> None:
    """Remove an agent (tests)."""
    with _lock:
        _agents.pop(name, None)


def on_signal(name: str) -> Callable[[A], A]:
    """Register ``fn(event, state, signal)`` (sync or async) as what resumes the function
    agent `name` after it returned ``WaitFor(...)``: ``@on_signal("approver")``, below its
    ``@agent("approver")`` function. (A class agent implements ``Agent.on_signal``.)"""

    def decorate(fn: A) -> A:
        target = get_agent(name)
        if not isinstance(target, FunctionAgent):
            raise ConfigError(f"@on_signal({name!r}): {target!r} is a class agent; implement "
                              "its on_signal method instead")  # fmt: skip
        target.signal_fn = fn
        return fn

    return decorate
