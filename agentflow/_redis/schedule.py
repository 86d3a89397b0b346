"""Delayed events and wait timeouts: a Redis sorted set of ready-built queue items.

``emit(..., delay=...)`` or ``emit(..., at=...)`` validates the event and builds its Celery
message at once, exactly as for an event sent now, and adds it to ``<prefix>:scheduled``
(member → due time, the message in ``<prefix>:scheduled:items``) instead of its queue. No
Celery ETA message is sent: one would sit unacked in a worker and run again every visibility
timeout. Every worker's scheduler (:mod:`agentflow._worker.scheduler`) moves due entries to
their queues with one script (``lua/move_due.lua``), so each entry is pushed exactly once,
however many workers race; a worker killed at any instant leaves each entry either in the
set or on its queue. With AOF the set survives a Redis restart like any queue.

This module has no worker import: producers use it.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta
from typing import Any

from agentflow._redis.scripts import Script
from agentflow.durations import parse_duration

SCHEDULE = Script("schedule")
"""Adds entries to the scheduled set."""
MOVE_DUE = Script("move_due")
"""Moves due entries to their queues (the scheduler's step)."""
UNSCHEDULE = Script("unschedule")
"""Makes a cancelled delayed event due at once (its worker then marks it cancelled)."""

CLOCK_HOOK_ENV = "AGENTFLOW_TEST_CLOCK"
"""Test-only: a worker started with this set to 1 adds ``<prefix>:test:clock_offset``
(seconds, in Redis) to the scheduler's clock, so tests can move time a day ahead."""

Delay = float | int | str | timedelta


def due_time(delay: Delay | None = None, at: datetime | float | None = None,
             now: float | None = None) -> float | None:  # fmt: skip
    """When an event emitted with `delay` (seconds, a timedelta or a duration such as
    ``"1h30m"``) or `at` (an aware datetime or epoch seconds) is due, in epoch seconds; None
    when neither is given. ValueError for both, or for a value that is not a time."""
    if delay is not None and at is not None:
        raise ValueError("give delay or at, not both")
    now = time.time() if now is None else now
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else parse_duration(delay)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"delay must be a finite duration >= 0, got {delay!r}")
        return now + seconds
    if at is None:
        return None
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware (e.g. datetime.now(UTC) + ...)")
        return at.timestamp()
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"at must be a datetime or epoch seconds, got {at!r}")
    return float(at)


def entry(queue: str, item: str, event_id: str | None = None, *, guard: str | None = None,
          token: str | None = None) -> str:  # fmt: skip
    """A scheduled entry: push `item` to `queue` when due (with `guard`, only while the wait
    record `guard` still waits with `token`)."""
    value: dict[str, Any] = {"q": queue, "m": item}
    if event_id is not None:
        value["i"] = event_id
    if guard is not None:
        value["g"], value["t"] = guard, token
    return json.dumps(value, separators=(",", ":"))


def schedule_args(items: list[tuple[str, float, str]]) -> list[Any]:
    """The schedule script's ARGV for ``[(member, due, entry), ...]``."""
    args: list[Any] = [len(items)]
    for member, due, value in items:
        args += [member, repr(float(due)), value]
    return args


def timeout_member(event_id: str) -> str:
    """The scheduled member of a suspended event's timeout."""
    return f"wait:{event_id}"
