"""Routing events to agent queues, and how a malformed queue item is recognised."""

from __future__ import annotations

import pytest

from agentflow._redis.queues import agent_queue
from agentflow._redis.routes import resolve_agent
from agentflow._redis.transport import (
    MALFORMED_CONTENT_TYPE,
    MALFORMED_HEADER,
    malformed_reason,
    stand_in,
)
from agentflow.config import load_settings
from agentflow.errors import UnknownAgent


def test_route_by_agent_then_type_then_default() -> None:
    s = load_settings(runner={"routes": {"greet": "echo"}, "default_agent": "noop"})
    assert resolve_agent({"type": "greet", "agent": "chat"}, s) == "chat"
    assert resolve_agent({"type": "greet"}, s) == "echo"
    assert resolve_agent({"type": "other"}, s) == "noop"
    assert agent_queue("echo") == "agentflow.agent.echo"


def test_unroutable_event_is_a_clear_error() -> None:
    with pytest.raises(UnknownAgent, match="no route"):
        resolve_agent({"type": "lost"}, load_settings(runner={"routes": {}}))


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (b"\x80not json", "not JSON"),
        (b'{"type": "t"}', "not a kombu message envelope"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    ],
)
def test_malformed_items_say_why(item: bytes, reason: str) -> None:
    assert reason in malformed_reason(item)
    env = stand_in(item.decode(errors="replace"), "agentflow.agent.echo", "malformed.1",
                   malformed_reason(item))  # fmt: skip
    assert env["content-type"] == MALFORMED_CONTENT_TYPE
    assert reason in env["headers"][MALFORMED_HEADER]
    assert env["properties"]["delivery_info"]["routing_key"] == "agentflow.agent.echo"
    assert env["properties"]["delivery_tag"] == "malformed.1"
