"""Chaining by result: the events an agent's result routes to (``AgentResult.route``).

The worker builds them here and pushes them in the finish script, in the same atomic step
that stores the result (:mod:`agentflow._worker.runner`): a crash between the two cannot
lose the next event or send it twice. Each next event carries the session, its parent's
metadata and its place in the chain under ``metadata["chain"]``: ``parent_id``,
``root_id`` and ``hop`` (1 for the first routed event).
"""

from __future__ import annotations

from typing import Any

from agentflow.models import AgentResult, Event

CHAIN_KEY = "chain"
"""The metadata key of an event's place in its chain."""


def chain_of(event: Event) -> dict[str, Any]:
    """The event's ``metadata["chain"]`` (empty for an event a producer emitted)."""
    chain = event.metadata.get(CHAIN_KEY)
    return chain if isinstance(chain, dict) else {}


def next_events(parent: Event, result: AgentResult) -> tuple[list[Event], int]:
    """The events `result` routes to, and their hop number (the parent's plus one)."""
    names = result.routes
    if not names:
        return [], 0
    chain = chain_of(parent)
    hop = int(chain.get("hop", 0) or 0) + 1
    link = {"parent_id": parent.id, "root_id": chain.get("root_id") or parent.id, "hop": hop}
    data = result.route_data if result.route_data is not None else {
        "input": result.output, "from": result.agent or parent.agent}  # fmt: skip
    metadata = {**parent.metadata, CHAIN_KEY: link}
    events = [
        Event(type=parent.type, agent=name, data=data, session_id=parent.session_id,
              metadata=metadata, tenant=parent.tenant)
        for name in names
    ]  # fmt: skip
    return events, hop
