"""What flows through a fan-out: tool calls, their results, and an agent's request for them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One call of one tool with its arguments."""

    id: str = Field(default_factory=lambda: "call_" + uuid.uuid4().hex[:12])
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What a call gave back: `output`, or `error` when it failed or timed out."""

    id: str
    name: str
    output: Any = None
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False
    started: float = 0.0
    """Wall-clock start (epoch seconds) in the process that ran the call."""
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.error is None


@dataclass
class CallTools:
    """Returned by an agent's `run` or `resume`: run these calls in parallel, then resume me.

    The event's task is replaced by a chord (the calls as tasks on the tools queue, then
    ``agentflow.resume_event``), so no worker waits for the tools; `context` (JSON) comes back
    to :meth:`Agent.resume` with the results, in the order of `calls`.
    """

    calls: list[ToolCall]
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, *calls: tuple[str, dict[str, Any]] | ToolCall, **context: Any) -> CallTools:
        """``CallTools.of(("search", {"q": "x"}), ("add", {"a": 1, "b": 2}), step="first")``."""
        built = [c if isinstance(c, ToolCall) else ToolCall(name=c[0], args=c[1]) for c in calls]
        return cls(built, dict(context))
