"""AgentFlow's remote control command (Celery's ``control_command`` extension point).

``agentflow_cancel`` (broadcast by :meth:`agentflow.Client.cancel`) cancels the running tool
calls of one event on every worker: each ends with a "cancelled" error, so the event's chord
completes and its continuation, seeing the event cancelled, marks it REVOKED. The event's
own request is cancelled by Celery's ``revoke(..., terminate=True)``, sent alongside.
"""

from __future__ import annotations

from typing import Any

from celery.worker.control import control_command, ok


@control_command(args=[("event_id", str)], signature="<event_id>")
def agentflow_cancel(state: Any, event_id: str, **_: Any) -> dict[str, Any]:
    """Cancel the running tool calls of `event_id` on this worker."""
    from agentflow._worker.asyncio_pool import AsyncPool

    pool = getattr(state.consumer, "pool", None)
    if not isinstance(pool, AsyncPool):
        return dict(ok("no AgentFlow pool here"))
    jobs = [j for j in pool.jobs_for_event(event_id) if j.args[0] == "agentflow.run_tool"]
    for job in jobs:
        job.cancel("event")
    return dict(ok(f"{len(jobs)} tool calls cancelled"))
