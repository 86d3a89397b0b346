"""Suspended events (``WaitFor``): their record in Redis and the scripts that end a wait.

An agent that returns ``WaitFor("approval", timeout=...)`` ends its Celery request: the
suspend script (``lua/suspend.lua``, run by the worker) stores the event, the awaited
signal's name and a token in ``<prefix>:wait:<event>`` (status ``waiting``), schedules the
timeout in the delayed-events set (:mod:`agentflow._redis.schedule`), writes the result
entry with status ``WAITING`` and settles the message — one step. What resumes it is a
message for ``agentflow.signal_event`` (task id = the event id) pushed to the agent's queue
by whichever comes first: ``Client.signal`` (``lua/signal.lua``) or the timeout
(``lua/move_due.lua``). Both flip the status to ``resumed`` only while it is ``waiting``,
in the same step as the push: a wait ends exactly once.

This module has no worker import: producers use it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agentflow._redis.scripts import Script

SUSPEND = Script("suspend")
"""Stores a suspended event and frees its run (worker side)."""
SIGNAL = Script("signal")
"""Ends a wait and pushes the resume message (producer side)."""

WAITING = "WAITING"
"""The Celery state a suspended event's result entry reads (not a finished state)."""


def waiting_meta(event_id: str, signal: str, due: float | None) -> str:
    """The result entry of a suspended event: status WAITING, what it waits for."""
    return json.dumps(
        {"status": WAITING, "result": {"signal": signal, "timeout_at": due},
         "traceback": None, "children": [], "date_done": datetime.now(UTC).isoformat(),
         "task_id": event_id},
        separators=(",", ":"),
    )  # fmt: skip


def signal_args(name: str, payload: Any, *, timed_out: bool = False) -> dict[str, Any]:
    """The signal a resume message carries (the third argument of ``agentflow.signal_event``)."""
    return {"name": name, "payload": payload, "timed_out": timed_out}
