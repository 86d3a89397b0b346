"""Redis ``WAIT`` after AgentFlow's writes: replicas that must have them before it goes on.

Redis replicates asynchronously: a write the primary has answered may not have reached a
replica when the primary dies, and a failover then loses it. With ``[broker] wait_replicas``
set, the producer's admission pipeline and each worker batch of begin/finish scripts end
with ``WAIT <replicas> <timeout>``, so ``emit`` returns, and a worker counts an event done,
only once that many replicas confirmed the writes (or the timeout passed: the write stays,
a warning is logged, ``replication.unconfirmed`` counted, and pipelines skip the WAIT for a
few seconds before trying again). One WAIT covers a whole pipeline; on a shared connection
(:mod:`agentflow._redis.shared_connection`: ``AsyncClient``, the gateway, the worker's
batches) it covers everything its loop wrote in that turn. It narrows the window
to writes in flight at the failover; it does not close it (Redis is not a consensus store;
docs/deploy.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agentflow.config import Settings

log = logging.getLogger("agentflow.replication")
_LOG_EVERY = 10.0


class ReplicaWait:
    """How many replicas a pipeline waits for, and how long at most.

    When fewer confirmed than asked (a replica is down, or a failover left the new primary
    without one), pipelines skip the WAIT for :data:`RETRY_AFTER` seconds and then try
    again, so a missing replica costs a warning and a count per pipeline, not
    `wait_timeout` on every one.
    """

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._skip_until = 0.0

    def add(self, pipe: Any) -> bool:
        """End `pipe` with the WAIT (True), or count it unconfirmed while replicas were
        missing a moment ago (False)."""
        command = self.command()
        if command is None:
            return False
        pipe.execute_command(*command)
        return True

    def command(self) -> list[Any] | None:
        """The WAIT command to end a batch of writes with, or None (counted unconfirmed)
        while replicas were missing a moment ago."""
        if time.monotonic() < self._skip_until:
            _count()
            return None
        return ["WAIT", self.replicas, self.timeout_ms]

    def check(self, reply: Any, what: str) -> None:
        """Count (and now and then log) a WAIT that fewer replicas confirmed in time."""
        confirmed = reply if isinstance(reply, int) else -1
        if confirmed >= self.replicas:
            return
        _count()
        global _last_logged
        now = time.monotonic()
        self._skip_until = now + RETRY_AFTER
        if now - _last_logged >= _LOG_EVERY:
            _last_logged = now
            log.warning("%s: %s of %d replicas confirmed the write within %d ms (it stands on "
                        "the primary; a failover now could lose it); not waiting for "
                        "replicas for %gs", what, confirmed if confirmed >= 0 else reply,
                        self.replicas, self.timeout_ms, RETRY_AFTER)  # fmt: skip


RETRY_AFTER = 5.0
"""Seconds pipelines go without WAIT after one that too few replicas confirmed."""
_last_logged = -_LOG_EVERY


def _count() -> None:
    from agentflow.metrics import get_metrics

    get_metrics().incr("replication.unconfirmed")


def replica_wait(settings: Settings) -> ReplicaWait | None:
    """The WAIT these settings ask for after each write pipeline, or None."""
    broker = settings.broker
    if broker.wait_replicas <= 0:
        return None
    return ReplicaWait(broker.wait_replicas, max(1, int(broker.wait_timeout * 1000)))
