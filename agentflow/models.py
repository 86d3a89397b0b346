"""The data that crosses the wire: events, agent results, usage (pydantic v2, JSON)."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def _new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as ``uuid.uuid4().hex`` gives, without
    building a UUID object (a producer makes one per event)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """A unit of work for one agent. Serialised as JSON; this is the wire format of run_event."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    type: str = Field(min_length=1, max_length=128)
    agent: str | None = Field(default=None, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=256)
    tenant: str | None = Field(default=None, max_length=128)
    """Who the event is for; ``[tenants] max_in_flight`` caps each tenant's events in
    flight across the cluster, so one tenant's flood does not starve the others."""

    @field_validator("agent", "tenant")
    @classmethod
    def _agent_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or not set(value) <= _NAME_CHARS):
            raise ValueError("names use letters, digits and _ - . : only")
        return value

    @field_validator("data", "metadata")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not _all_finite(value):
            raise ValueError("NaN and Infinity are not JSON: every number must be finite")
        return value

    @property
    def dedup_key(self) -> str:
        """The key that makes a redelivered event produce one result: idempotency key, else id."""
        return self.idempotency_key or self.id


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


class Usage(BaseModel):
    """Tokens and estimated cost spent by one event."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    cache_hits: int = 0

    def add(self, other: Usage) -> None:
        """Accumulate another usage record into this one."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.cost_usd += other.cost_usd
        self.llm_calls += other.llm_calls
        self.cache_hits += other.cache_hits


class StateUpdate(BaseModel):
    """A delta against session state: keys to set, keys to delete, counters to add to."""

    set: dict[str, Any] = Field(default_factory=dict)
    delete: list[str] = Field(default_factory=list)
    incr: dict[str, int] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the delta changes nothing."""
        return not (self.set or self.delete or self.incr)


class AgentResult(BaseModel):
    """What an agent returns for one event; the JSON object the result backend holds."""

    event_id: str = ""
    agent: str = ""
    output: Any = None
    state_updates: StateUpdate = Field(default_factory=StateUpdate)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    worker: str | None = None
    route: str | list[str] | None = None
    """The agent(s) to run next: the worker emits one event to each in the same atomic step
    that stores this result (see docs/agents.md, "Chaining by result")."""
    route_data: dict[str, Any] | None = None
    """The next events' `data`; None means ``{"input": output, "from": agent}``."""
    next_events: list[str] = Field(default_factory=list)
    """The ids of the events `route` emitted (the worker fills it in)."""

    @field_validator("route")
    @classmethod
    def _route_names(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value or []
        for name in names:
            if not name or not set(name) <= _NAME_CHARS:
                raise ValueError(f"route {name!r}: agent names use letters, digits and _ - . :")
        return value

    @property
    def routes(self) -> list[str]:
        """`route` as a list."""
        return [self.route] if isinstance(self.route, str) else list(self.route or [])

    @property
    def ok(self) -> bool:
        """True when the agent finished without an error."""
        return self.error is None


class WaitFor(BaseModel):
    """Returned by an agent: suspend the event until the signal `signal` arrives
    (``Client.signal(event_id, signal, payload)``) or `timeout` seconds pass, without holding
    a worker slot meanwhile. The agent's ``on_signal(event, state, signal)`` then runs on any
    worker, and its result is the event's. `context` (JSON) comes back in ``signal.context``.
    """

    model_config = ConfigDict(extra="forbid")

    signal: str = Field(min_length=1, max_length=128)
    timeout: float | None = Field(default=None, gt=0)
    """Seconds to wait (a number, or a duration such as ``"1h"``); None waits without end."""
    context: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, signal: str, /, **data: Any) -> None:
        super().__init__(signal=signal, **data)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        from agentflow.durations import parse_duration

        seconds = parse_duration(value)
        if not math.isfinite(seconds):
            raise ValueError("timeout must be finite")
        return seconds

    @field_validator("context")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not _all_finite(value):
            raise ValueError("NaN and Infinity are not JSON: every number must be finite")
        return value


class Signal(BaseModel):
    """What resumes a waiting event, as the agent's ``on_signal`` gets it: the signal's
    `name` and `payload`, or ``timed_out=True`` (payload None) when its WaitFor's timeout
    passed first; `context` is what the WaitFor carried."""

    name: str
    payload: Any = None
    timed_out: bool = False
    context: dict[str, Any] = Field(default_factory=dict)
