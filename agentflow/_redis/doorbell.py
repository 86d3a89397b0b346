"""Doorbells: how producers wake an idle worker without the worker popping the queue.

A worker fetches with a Lua script, which cannot block, so an idle worker waits with BRPOP on
``agentflow.wake:<queue>`` instead of on the queue itself. Every AgentFlow producer rings the
doorbell of the queue it pushes to in the same round trip as the push, and names the queue
in :data:`QUEUES_KEY`, so that workers find every queue pushed to without scanning the
keyspace. This module has no kombu import, so producers can use it without loading the
worker's transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

WAKE_PREFIX = "agentflow.wake:"
"""Doorbell keys: ``agentflow.wake:<queue>``; a push of anything wakes one idle consumer."""
QUEUES_KEY = "agentflow.queues"
"""Set of the queues AgentFlow's producers have pushed to (the heartbeat's janitor reads it
to find queues that no worker serves; a SCAN of the keyspace grows with every result kept)."""
WAKE_LIMIT = 16
"""At most this many rings are kept per queue (rings no consumer waited for expire here)."""


def wake_key(queue: str) -> str:
    """The doorbell key of `queue`."""
    return WAKE_PREFIX + queue


def ring(pipe: Any, queues: Iterable[str], rings: int = 1) -> None:
    """Queue doorbell rings for `queues` on `pipe` (one per message pushed, up to a limit),
    and name the queues in :data:`QUEUES_KEY`."""
    queues = list(queues)
    if queues:
        pipe.sadd(QUEUES_KEY, *queues)
    for queue in queues:
        key = wake_key(queue)
        pipe.lpush(key, *([1] * max(1, min(rings, WAKE_LIMIT))))
        pipe.ltrim(key, 0, WAKE_LIMIT - 1)
