"""Routing events to agent queues, and how a malformed queue item is recognised."""

from __future__ import annotations

import json

import pytest

from agentflow.broker.queues import agent_queue
from agentflow.broker.routes import resolve_agent
from agentflow.broker.transport import MALFORMED_CONTENT_TYPE, MALFORMED_HEADER, parse_item
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


def test_envelope_passes_through() -> None:
    env = {"body": "e30=", "headers": {},
           "properties": {"delivery_tag": "x", "delivery_info": {"routing_key": "q"}}}  # fmt: skip
    assert parse_item(json.dumps(env).encode(), "q") == env


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (b"\x80not json", "not JSON"),
        (b'{"type": "t"}', "not a kombu message envelope"),
        # an envelope kombu could not deliver (no delivery tag): dead-lettered, not lost
        (b'{"body": "e30=", "properties": {"delivery_info": {}}}', "not a kombu message envelope"),
    ],
)
def test_malformed_items_become_dead_letter_envelopes(item: bytes, reason: str) -> None:
    env = parse_item(item, "agentflow.agent.echo")
    assert env["content-type"] == MALFORMED_CONTENT_TYPE
    assert reason in env["headers"][MALFORMED_HEADER]
    assert env["properties"]["delivery_info"]["routing_key"] == "agentflow.agent.echo"
