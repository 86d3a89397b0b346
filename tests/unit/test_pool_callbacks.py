"""A request's callbacks reach Celery in the order the pool asked for them.

kombu's hub keeps what ``call_soon`` gives it in a set and runs it in no particular order;
a request whose ``on_success`` ran before its ``on_accepted`` stayed in the worker's active
requests (``inspect active``, Flower's ACTIVE column) for good.
"""

from __future__ import annotations

import random
import select
import threading
from typing import Any

from agentflow._worker.asyncio_pool import AsyncPool


class SetHub:
    """kombu's hub as far as ordering goes: ready callbacks in a set, run in any order;
    readers run when their file descriptor is readable."""

    def __init__(self, seed: int) -> None:
        self.ready: set[Any] = set()
        self.on_tick: set[Any] = set()  # run on every turn of the loop, as kombu's hub does
        self.readers: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        self.lock = threading.Lock()
        self.rng = random.Random(seed)

    def call_soon(self, fn: Any, *args: Any) -> None:
        with self.lock:
            self.ready.add((fn, args, self.rng.random()))

    def add_reader(self, fd: int, fn: Any, *args: Any) -> None:
        self.readers[fd] = (fn, args)

    def _readable(self) -> list[int]:
        return select.select(list(self.readers), [], [], 0)[0] if self.readers else []

    def pending(self) -> bool:
        """Whether a turn would run anything."""
        return bool(self.ready) or bool(self._readable())

    def run_ready(self) -> None:
        with self.lock:
            todo, self.ready = list(self.ready), set()
        self.rng.shuffle(todo)
        for fn, args, _ in todo:
            fn(*args)
        for tick in list(self.on_tick):
            tick()
        for fd in self._readable():
            fn, args = self.readers[fd]
            fn(*args)


def test_callbacks_run_in_the_order_asked_whatever_order_the_hub_uses() -> None:
    pool = AsyncPool(limit=1)
    try:
        for seed in range(20):
            hub = SetHub(seed)
            pool.register_with_event_loop(hub)
            calls: list[tuple[str, int]] = []
            for request in range(50):
                pool.on_request_thread(calls.append, ("accepted", request))
                pool.on_request_thread(calls.append, ("succeeded", request))
                if request % 7 == 0:
                    hub.run_ready()
            while hub.pending():
                hub.run_ready()
            expected = [(what, r) for r in range(50) for what in ("accepted", "succeeded")]
            assert calls == expected
    finally:
        pool.on_stop()


def test_callbacks_asked_from_many_threads_each_run_once_in_per_thread_order() -> None:
    pool = AsyncPool(limit=1)
    hub = SetHub(0)
    pool.register_with_event_loop(hub)
    calls: list[tuple[int, int]] = []

    def producer(thread: int) -> None:
        for i in range(500):
            pool.on_request_thread(calls.append, (thread, i))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or hub.pending():
        hub.run_ready()
    for t in threads:
        t.join()
    hub.run_ready()
    assert len(calls) == 2000
    for thread in range(4):
        assert [i for t, i in calls if t == thread] == list(range(500))
    pool.on_stop()


def test_a_failing_callback_does_not_hold_back_the_others() -> None:
    pool = AsyncPool(limit=1)
    hub = SetHub(1)
    pool.register_with_event_loop(hub)
    calls: list[str] = []

    def fail() -> None:
        raise RuntimeError("callback failed")

    pool.on_request_thread(calls.append, "before")
    pool.on_request_thread(fail)
    pool.on_request_thread(calls.append, "after")
    hub.run_ready()
    assert calls == ["before", "after"]
    pool.on_request_thread(calls.append, "later")
    hub.run_ready()
    assert calls == ["before", "after", "later"]
    pool.on_stop()


def test_callbacks_queued_when_the_pool_stops_still_run_in_order() -> None:
    """Celery stops the consumer (the hub's loop ends) before the pool: callbacks queued for
    the hub in between run when the pool stops, and later ones on the caller's thread, in
    the order asked (an ack lost there is a finished event run again)."""
    pool = AsyncPool(limit=1)
    hub = SetHub(0)
    pool.register_with_event_loop(hub)
    calls: list[tuple[str, int]] = []
    pool.on_request_thread(calls.append, ("accepted", 1))
    pool.on_request_thread(calls.append, ("succeeded", 1))
    assert calls == []  # waiting for a hub turn that never comes
    pool.on_stop()
    pool.on_request_thread(calls.append, ("succeeded", 2))
    assert calls == [("accepted", 1), ("succeeded", 1), ("succeeded", 2)]
