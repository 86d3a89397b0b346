"""The worker's scheduler: moves due delayed events and wait timeouts to their queues.

One thread in each worker's main process runs :func:`agentflow._redis.schedule.MOVE_DUE`
every ``[runner] scheduler_interval`` (1 s). Every worker runs it: the script takes each due
entry out of ``<prefix>:scheduled`` and pushes it in one atomic step, so racing workers move
disjoint entries and nothing depends on one of them being alive. A worker killed mid-step
leaves each entry either in the set or on its queue.

Test-only clock hook: a worker started with ``AGENTFLOW_TEST_CLOCK=1`` adds the seconds in
``<prefix>:test:clock_offset`` to its clock (inside the script), so a test can move time a
day ahead without waiting for it. Production workers never read that key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from agentflow._redis.doorbell import QUEUES_KEY, WAKE_LIMIT, WAKE_PREFIX
from agentflow._redis.keys import Keys
from agentflow._redis.schedule import CLOCK_HOOK_ENV, MOVE_DUE

log = logging.getLogger("agentflow.worker")

BATCH = 500
"""Entries one script call moves at most (a call blocks Redis while it runs)."""
MAX_ROUNDS = 20
"""Script calls per tick at most; the rest wait for the next tick."""


class Scheduler:
    """Moves due scheduled entries to their queues, every `interval` seconds, in a thread."""

    def __init__(self, interval: float) -> None:
        from agentflow.config import get_settings

        settings = get_settings()
        self.interval = interval
        self.keys = Keys(settings.broker.key_prefix)
        runner = settings.runner
        self._inflight_ttl = runner.hard_time_limit + 2 * runner.visibility_timeout
        self._clock_key = self.keys.clock_offset if os.environ.get(CLOCK_HOOK_ENV) == "1" else ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentflow-scheduler",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        """Start ticking in a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> int:
        """Move what is due now; how many entries were pushed (a failure is logged and the
        next tick tries again)."""
        from agentflow._redis.connection import get_redis

        moved = 0
        try:
            client = get_redis()
            for _ in range(MAX_ROUNDS):
                pushed, dropped = self.step(client)
                moved += pushed
                if pushed + dropped < BATCH:
                    break
        except Exception as exc:
            log.warning("scheduler step failed (retrying next tick): %s", exc)
        return moved

    def step(self, client: Any) -> tuple[int, int]:
        """One script call: (entries pushed, entries dropped: timeouts whose wait ended)."""
        now = time.time()
        keys = [self.keys.scheduled, self.keys.scheduled_items, QUEUES_KEY, self._clock_key,
                self.keys.inflight]  # fmt: skip
        args = [repr(now), BATCH, repr(now + self._inflight_ttl), WAKE_PREFIX, WAKE_LIMIT]
        pushed, dropped = MOVE_DUE(client, keys, args)
        return int(pushed), int(dropped)


_scheduler: Scheduler | None = None


def start() -> Scheduler:
    """Start this worker's scheduler (once)."""
    global _scheduler
    from agentflow.config import get_settings

    if _scheduler is None:
        _scheduler = Scheduler(get_settings().runner.scheduler_interval)
        _scheduler.start()
    return _scheduler


def stop() -> None:
    """Stop this worker's scheduler."""
    global _scheduler
    if _scheduler is not None:
        _scheduler.stop()
        _scheduler = None
