"""Coroutines handed to the process loop from many threads all run, each exactly once."""

from __future__ import annotations

import threading
from collections import Counter

from agentflow import _aio


def test_submitted_coroutines_from_many_threads_each_run_once() -> None:
    seen: Counter[int] = Counter()
    done = threading.Event()
    total = 8 * 250

    async def job(n: int) -> None:
        seen[n] += 1
        if sum(seen.values()) == total:
            done.set()

    def producer(base: int) -> None:
        for i in range(250):
            _aio.submit(job(base + i))

    threads = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done.wait(10)
    assert len(seen) == total and set(seen.values()) == {1}


def test_only_threads_off_the_loop_may_wait_on_it() -> None:
    """A blocking wrapper (the sync Client) may block on the loop from any thread but the
    loop's own, where it would wait for ever."""

    async def on_the_loop() -> bool:
        return _aio.can_wait_on_loop()

    assert _aio.can_wait_on_loop()
    assert _aio.run(on_the_loop()) is False
