"""How much work each queue has: queued, plus taken by a worker and not yet acked.

A queue's list length (``LLEN``) reads zero while every slot is busy: workers take messages
before they run them (prefetch) and ack them only once the result is stored (acks late), and
in between a message lives in kombu's ``unacked`` hash, recorded there by ``lua/fetch.lua``
in the same step that took it. An autoscaler that counted the list alone would scale busy
workers away. :func:`backlog` adds the two: what waits on the queue (every priority list of
it) and what workers hold (prefetched or running), the signal the worker's heartbeat sends as
the ``queue.backlog.<agent>`` and ``tools.backlog`` gauges (``deploy/k8s`` scales on them).

Counting held messages reads the unacked hash in steps of :data:`SCAN_COUNT` records with
``lua/held.lua``, which returns only queue names and counts. It is a reading for scaling,
not an exact figure: ``HSCAN`` may return a record twice while Redis resizes the hash, and
records come and go while the scan runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentflow._redis.scripts import Script

UNACKED_KEY = "unacked"
"""kombu's hash of messages workers hold (its Redis channel's ``unacked_key``)."""
PRIORITY_SEP = "\x06\x16"
"""kombu's separator between a queue's name and a priority step in the list's key."""
PRIORITY_STEPS = (0, 3, 6, 9)
"""kombu's priority steps: step 0 is the queue's own key, the others have a suffix."""
SCAN_COUNT = 500
"""Unacked records one script call looks at."""

_HELD = Script("held")


@dataclass(frozen=True)
class Backlog:
    """One queue's work: `queued` waiting on its lists, `held` taken and not yet acked."""

    queued: int = 0
    held: int = 0

    @property
    def total(self) -> int:
        """Queued plus held: the work the queue's workers have to do."""
        return self.queued + self.held


def held_by_queue(client: Any, unacked_key: str = UNACKED_KEY) -> Counter[str]:
    """Messages workers hold (prefetched or running), counted by queue."""
    held: Counter[str] = Counter()
    cursor: Any = 0
    while True:
        reply = _HELD(client, [unacked_key], [cursor, SCAN_COUNT])
        cursor = reply[0]
        pairs = reply[1:]
        for queue, n in zip(pairs[::2], pairs[1::2], strict=True):
            name = queue.decode(errors="replace") if isinstance(queue, bytes) else str(queue)
            held[name] += int(n)
        if cursor in (0, b"0", "0"):
            return held


def queued(client: Any, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting on each queue, every priority list of it summed."""
    names = list(dict.fromkeys(queues))
    pipe = client.pipeline(transaction=False)
    for name in names:
        for step in PRIORITY_STEPS:
            pipe.llen(name if step == 0 else f"{name}{PRIORITY_SEP}{step}")
    lengths = pipe.execute()
    n = len(PRIORITY_STEPS)
    return {name: sum(int(x) for x in lengths[i * n : (i + 1) * n]) for i, name in enumerate(names)}


def backlog(
    client: Any, queues: Iterable[str], unacked_key: str = UNACKED_KEY
) -> dict[str, Backlog]:
    """Queued and held messages of each of `queues`."""
    waiting = queued(client, queues)
    held = held_by_queue(client, unacked_key)
    return {name: Backlog(queued=n, held=held.get(name, 0)) for name, n in waiting.items()}
