"""Lifecycle hooks (agentflow.hooks) run in the worker, in order, on every pool; a refusing
hook dead-letters the event; a hook that raises never loses it."""

from __future__ import annotations

import time

import pytest

from agentflow import Client
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import EventFailed
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration

HOOKS_ENV = {"AGENTFLOW_AGENTS__MODULES": '["tests.agents", "tests.hook_agents"]'}


def _seen(redis_client, event_id: str) -> list[str]:
    """What the hooks recorded for the event, once after_event has (it runs after the
    result is stored, so a caller may see the result first)."""
    key = f"{TEST_PREFIX}:test:hooks:{event_id}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        seen = [e.decode() for e in redis_client.lrange(key, 0, -1)]
        if seen and seen[-1].startswith("after_event"):
            return seen
        time.sleep(0.02)
    return [e.decode() for e in redis_client.lrange(key, 0, -1)]


@pytest.mark.parametrize("pool", [None, "prefork"])
def test_hooks_run_in_order_around_an_event_and_its_tool_calls(
    pool: str | None, start_worker, client: Client, redis_client
) -> None:
    start_worker(env=HOOKS_ENV, pool=pool)
    handle = client.emit({"type": "t", "agent": "tally", "session_id": "s1"})
    assert handle.result(timeout=30).error is None
    assert _seen(redis_client, handle.id) == [
        "before_event:visits=0", "before_event:second", "before_agent_run",
        "after_agent_run:AgentResult", "after_event:ok:AgentResult",
    ]  # fmt: skip
    fan = client.emit({"type": "t", "agent": "fanout", "data": {"calls": 2, "seconds": 0}})
    assert fan.result(timeout=30).output["indices"] == [0, 1]
    # before_event once; the agent runs twice (run, then resume after its tool calls)
    assert _seen(redis_client, fan.id) == [
        "before_event:visits=0", "before_event:second", "before_agent_run",
        "after_agent_run:CallTools", "before_agent_run", "after_agent_run:AgentResult",
        "after_event:ok:AgentResult",
    ]  # fmt: skip


def test_a_refusing_hook_dead_letters_the_event_with_its_reason(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(env=HOOKS_ENV)
    handle = client.emit({"type": "t", "agent": "ledger", "data": {"refuse": "over budget"}})
    with pytest.raises(EventFailed, match="over budget"):
        handle.result(timeout=30)
    assert redis_client.llen(f"{TEST_PREFIX}:test:runs:{handle.id}") == 0  # agent never ran
    [entry] = DeadLetterQueue(redis_client, TEST_PREFIX).list()
    assert entry.reason == "refused by a hook: over budget"
    assert entry.event is not None and entry.event["id"] == handle.id
    assert _seen(redis_client, handle.id)[-1] == "after_event:EventRejected"


@pytest.mark.parametrize(
    "where", ["before_event", "before_agent_run", "after_agent_run", "after_event"]
)
def test_a_hook_that_raises_never_loses_the_event(
    where: str, start_worker, client: Client, redis_client
) -> None:
    start_worker(env=HOOKS_ENV)
    handle = client.emit({"type": "t", "agent": "ledger", "data": {"hook_raises": where}})
    assert handle.result(timeout=30).output == {"n": 1}
    assert redis_client.llen(f"{TEST_PREFIX}:test:runs:{handle.id}") == 1
    assert len(DeadLetterQueue(redis_client, TEST_PREFIX)) == 0
    assert _seen(redis_client, handle.id)[-1] == "after_event:ok:AgentResult"


def test_agent_error_and_after_event_see_the_failure(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(env=HOOKS_ENV)
    handle = client.emit({"type": "t", "agent": "boom", "data": {"hook_raises": "agent_error"}})
    with pytest.raises(EventFailed, match="boom"):
        handle.result(timeout=30)
    assert _seen(redis_client, handle.id)[-2:] == [
        "agent_error:RuntimeError",
        "after_event:AgentError",
    ]
    assert len(DeadLetterQueue(redis_client, TEST_PREFIX)) == 1
