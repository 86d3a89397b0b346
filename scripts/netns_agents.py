"""The agent the namespace cluster's workers run (scripts/netns_cluster.py).

``stint`` waits ``data.seconds`` on the worker's event loop, like an agent waiting for an LLM,
and records every run it starts under ``<prefix>:netns:runs:<event id>`` as
``"<host> <pid> <unix time>"`` (and counts it under ``<prefix>:netns:started:<host>``), so a test can count the runs of each event, see which host
ran it and when. Each event adds 1 to its session's ``total``: a delta applied twice shows as
a total of 2.
"""

from __future__ import annotations

import asyncio
import os
import time

from stint_records import runs_key

from agentflow import AgentResult, Event, State, StateUpdate, agent
from agentflow._redis.connection import get_async_redis
from agentflow.config import get_settings

HOST_ENV = "AGENTFLOW_NETNS_HOST"
"""The harness names each worker's host in this variable."""


def started_key(prefix: str, host: str) -> str:
    """How many runs ``stint`` started on `host` (the harness waits for a host to be busy)."""
    return f"{prefix}:netns:started:{host}"


@agent("stint", timeout=120.0)
async def stint(event: Event, state: State) -> AgentResult:
    """Record the run, wait ``data.seconds`` (default 0.2), add 1 to the session total."""
    host = os.environ.get(HOST_ENV, "?")
    prefix = get_settings().broker.key_prefix
    r = get_async_redis()
    await r.rpush(runs_key(prefix, event.id), f"{host} {os.getpid()} {time.time():.3f}")
    await r.incr(started_key(prefix, host))
    await asyncio.sleep(float(event.data.get("seconds", 0.2)))
    return AgentResult(output={"host": host}, state_updates=StateUpdate(incr={"total": 1}))
