"""Lifecycle hooks used by tests/integration/test_hooks.py (workers load this module only
in those tests, through `[agents] modules`). Each hook records what it saw in a Redis list
``<prefix>:test:hooks:<event id>``; `data` asks a hook to refuse or to raise."""

from __future__ import annotations

import redis.asyncio as aredis

from agentflow import Event, State, hooks
from agentflow._redis.connection import get_redis
from agentflow.config import get_settings
from agentflow.errors import EventRefused


def _key(event: Event) -> str:
    return f"{get_settings().broker.key_prefix}:test:hooks:{event.id}"


def _record(event: Event, entry: str) -> None:
    get_redis().rpush(_key(event), entry)


def _maybe_raise(event: Event, name: str) -> None:
    if event.data.get("hook_raises") == name:
        raise RuntimeError(f"{name} hook broke")


@hooks.before_event
async def first(event: Event, state: State) -> None:
    """Async: record, refuse when asked."""
    client = aredis.Redis.from_url(get_settings().broker.url)
    try:
        await client.rpush(_key(event), f"before_event:visits={state.get('visits', 0)}")
    finally:
        await client.aclose()
    if event.data.get("refuse"):
        raise EventRefused(str(event.data["refuse"]))
    _maybe_raise(event, "before_event")


@hooks.before_event
def second(event: Event, state: State) -> None:
    """A second hook of the same kind runs after the first."""
    _record(event, "before_event:second")


@hooks.before_agent_run
def each_run(event: Event, state: State) -> None:
    _record(event, "before_agent_run")
    _maybe_raise(event, "before_agent_run")


@hooks.after_agent_run
def ran(event: Event, state: State, result: object) -> None:
    _record(event, f"after_agent_run:{type(result).__name__}")
    _maybe_raise(event, "after_agent_run")


@hooks.agent_error
def failed(event: Event, state: State, error: BaseException) -> None:
    _record(event, f"agent_error:{type(error).__name__}")
    _maybe_raise(event, "agent_error")


@hooks.after_event
def ended(event: Event, state: State, result: object, error: BaseException | None) -> None:
    outcome = type(error).__name__ if error is not None else f"ok:{type(result).__name__}"
    _record(event, f"after_event:{outcome}")
    _maybe_raise(event, "after_event")
