"""The gateway's response bodies (pydantic): what the handlers answer and what
/openapi.json describes. Request bodies are :class:`~agentflow.models.Event` itself, so an
event is validated exactly as ``Client.emit`` validates it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agentflow.models import AgentResult

Status = Literal["pending", "started", "succeeded", "failed", "cancelled"]

CELERY_STATUS: dict[str, Status] = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "cancelled",
    "RETRY": "started",
    "STARTED": "started",
}
"""Celery's result states → the gateway's (PENDING is pending, or started once a run holds
the event)."""


class EventAccepted(BaseModel):
    """202: the event is queued for its agent."""

    id: str
    agent: str
    status: Status = "pending"
    links: dict[str, str] = Field(description="`self` (status and result) and `stream` (SSE).")


class EventStatus(BaseModel):
    """An event's status as the producer sees it, with its result once it has one."""

    id: str
    agent: str
    status: Status
    result: AgentResult | None = None
    error: str | None = Field(default=None, description="Why it failed (status failed).")


class CancelAccepted(BaseModel):
    """202: the cancel was broadcast; the event ends as cancelled."""

    id: str
    cancelled: bool = True


class AgentInfo(BaseModel):
    """An agent the gateway knows: registered in this process or announced by a worker."""

    name: str
    description: str = ""
    served: bool = Field(description="A live worker announced it (events will run).")
    last_seen: float | None = Field(default=None, description="When a worker last did (epoch s).")


class AgentList(BaseModel):
    """`GET /v1/agents`: the agents this key may use."""

    agents: list[AgentInfo]


class DeadLetterInfo(BaseModel):
    """One dead-lettered event and why it could not run."""

    id: str
    reason: str
    queue: str | None = None
    task_id: str | None = None
    event: dict[str, Any] | None = None
    raw: str | None = None
    failed_at: float
    source: str
    attempts: int


class DeadLetterList(BaseModel):
    """`GET /v1/dlq`: entries oldest first (those of agents this key may use)."""

    entries: list[DeadLetterInfo]
    total: int = Field(description="Entries in the whole queue.")


class Health(BaseModel):
    """`/healthz`: the process is up and Redis answers."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None


class FieldError(BaseModel):
    """One field at fault in a 422."""

    field: str
    pointer: str = Field(description="JSON pointer into the request body.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
