"""Traces: a timeline of what happened to each event and session, kept in Redis for a while.

With ``[monitoring] trace = true`` every worker records the steps of each event it runs:
its start (agent, worker, queue wait, attempt), the hooks, each LLM call (model, tokens,
cost, cache hit), the tool calls it fanned out and each call's run, the events its result
chained to, and its end (outcome, time, usage). The steps of one run are written at its end, as one JSON
array, by one script call on the worker's batch, to the list ``<prefix>:trace:<event id>``;
a session's events are listed in ``<prefix>:trace:session:<session id>``. Both expire after
``[monitoring] trace_ttl``.

`agentflow trace <event id | session id>` prints it as a tree (``--json`` for the data);
:func:`read_trace` gives the same data to code.
"""

from __future__ import annotations

import json
import time
from typing import Any

TRACE_PREFIX = "trace"


def event_key(prefix: str, event_id: str) -> str:
    """The list of an event's steps."""
    return f"{prefix}:{TRACE_PREFIX}:{event_id}"


def session_key(prefix: str, session_id: str) -> str:
    """The list of a session's event ids, in the order they started."""
    return f"{prefix}:{TRACE_PREFIX}:session:{session_id}"


class Steps:
    """The steps of one run of one event, written when the run ends (:meth:`commands`)."""

    __slots__ = ("entries", "event_id", "first", "session_id")

    def __init__(self, event_id: str, session_id: str | None, first: bool) -> None:
        self.event_id = event_id
        self.session_id = session_id
        self.first = first
        """The event's first run (it joins its session's list)."""
        self.entries: list[dict[str, Any]] = []

    def add(self, kind: str, **fields: Any) -> None:
        """Record a step of `kind` now."""
        fields["kind"] = kind
        fields["at"] = round(time.time(), 6)
        self.entries.append(fields)

    def call(self, prefix: str, ttl: int) -> tuple[list[str], list[Any]]:
        """(keys, args) of the trace script that stores the steps: one JSON array per run
        (one list item, one script call)."""
        session = session_key(prefix, self.session_id) if self.first and self.session_id else ""
        try:
            encoded = _compact(self.entries)
        except (TypeError, ValueError):  # a value JSON cannot hold as it is: its text
            encoded = json.dumps(self.entries, separators=(",", ":"), default=str)
        return [event_key(prefix, self.event_id), session], [encoded, ttl, self.event_id]


_compact = json.JSONEncoder(separators=(",", ":")).encode


def note_llm_call(model: str, usage: Any, cached: bool, seconds: float) -> None:
    """Record an LLM call in the trace of the event the caller runs for (if traced)."""
    from agentflow.context import current_run

    run = current_run()
    steps = getattr(run, "steps", None) if run is not None else None
    if isinstance(steps, Steps):
        steps.add("llm", model=model, prompt_tokens=usage.prompt_tokens,
                  completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
                  cache_hit=cached, ms=round(seconds * 1000, 3))  # fmt: skip


def read_trace(client: Any, prefix: str, ident: str, *, follow: bool = True,
               limit: int = 200) -> dict[str, Any]:  # fmt: skip
    """The trace of an event (and, with `follow`, the events it chained to), or of every
    event of a session: ``{"session": id|None, "events": [{"event_id", "steps", "next"}]}``.
    Reads with a blocking redis-py client."""
    session_ids = client.lrange(session_key(prefix, ident), 0, limit - 1)
    if session_ids:
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in session_ids]
        return {"session": ident, "events": [_event(client, prefix, i, False, limit)
                                             for i in dict.fromkeys(ids)]}  # fmt: skip
    return {"session": None, "events": [_event(client, prefix, ident, follow, limit)]}


def _event(client: Any, prefix: str, event_id: str, follow: bool, limit: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for item in client.lrange(event_key(prefix, event_id), 0, -1):
        decoded = json.loads(item)  # one run's steps (an array)
        steps += decoded if isinstance(decoded, list) else [decoded]
    steps.sort(key=lambda s: s.get("at", 0))
    node: dict[str, Any] = {"event_id": event_id, "steps": steps, "next": []}
    if follow and limit > 0:
        for step in steps:
            if step.get("kind") == "chained":
                node["next"] += [_event(client, prefix, nxt, True, limit - 1)
                                 for nxt in step.get("events", [])]  # fmt: skip
    return node
