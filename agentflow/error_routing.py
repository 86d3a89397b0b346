"""Error routing: a failed event goes to a handler agent chosen by its error category.

``[error_routing]`` in agentflow.toml names a handler agent per category; the worker sends
the failed event's handler an event of type ``agentflow.failure`` whose ``data.failure``
says what failed and why. A failure with no handler, and any failure of a handler's own
event (a routing loop is cut there), goes to the dead-letter queue as before.
"""

from __future__ import annotations

from typing import Any, Literal

from agentflow.errors import LLMUnavailable, RateLimited, ToolError
from agentflow.models import Event

Category = Literal[
    "validation", "timeout", "llm_unavailable", "rate_limited", "tool_error", "agent_error"
]
"""The error categories a handler can be named for."""

FAILURE_TYPE = "agentflow.failure"
"""The type of the events sent to handlers."""
ROUTED_KEY = "error_route"
"""The metadata key that marks a handler's event (its failure is not routed again)."""


def category_of(exc: BaseException) -> Category:
    """The category of an agent's exception."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, LLMUnavailable):
        return "llm_unavailable"
    if isinstance(exc, ToolError):
        return "tool_error"
    return "agent_error"


def is_handler_event(raw: Any) -> bool:
    """Whether `raw` is itself an event sent to a handler (its failure is dead-lettered)."""
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    return isinstance(metadata, dict) and ROUTED_KEY in metadata


def handler_event(handler: str, category: str, reason: str, raw: Any, task_id: str | None,
                  queue: str | None) -> Event:  # fmt: skip
    """The event that tells `handler` about the failure of `raw` (the wire event)."""
    event = raw if isinstance(raw, dict) else {}
    session = event.get("session_id")
    found = event.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    failed_id = event.get("id") if isinstance(event.get("id"), str) else task_id
    dedup = event.get("idempotency_key") or failed_id or task_id or ""
    return Event(
        type=FAILURE_TYPE,
        agent=handler,
        session_id=session if isinstance(session, str) else None,
        data={"failure": {"category": category, "reason": reason, "event_id": failed_id,
                          "agent": event.get("agent"), "queue": queue, "event": raw}},
        metadata={**metadata, ROUTED_KEY: {"category": category, "event_id": failed_id}},
        # A redelivered failure routes again: the handler runs once for it all the same.
        idempotency_key=f"failure:{dedup}"[:256],
    )  # fmt: skip
