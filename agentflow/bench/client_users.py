"""Load as an application makes it: threads that each emit an event through :class:`Client`
and wait for its result with ``handle.result()``, one after another (closed loop); or the
same from coroutines on one event loop through :class:`AsyncClient`.

The lean driver (:mod:`agentflow.bench.driver`) batches emits and reads every result from
one subscription; this is what a user's own code costs — one ``emit`` and one blocking
``result`` per event, from as many threads as there are users, on one shared client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from agentflow import _aio
from agentflow.bench.driver import WorkerWatch
from agentflow.bench.stats import BenchReport, Sample
from agentflow.client import AsyncClient, Client
from agentflow.models import Event


def run_client_users(
    client: Client, make_event: Callable[[], Event], users: int, duration: float, *,
    name: str = "client", workers: WorkerWatch | None = None, timeout: float = 60.0,
) -> BenchReport:  # fmt: skip
    """Drive `users` threads for `duration` seconds; the report counts what finished."""
    stop = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    agent = [""]
    watch = workers or WorkerWatch()
    samples: list[Sample] = []

    def user() -> None:
        while not stop.is_set():
            event = make_event()
            started = time.monotonic()
            try:
                with lock:
                    sent[0] += 1
                    agent[0] = event.agent or agent[0]
                client.emit(event).result(timeout=timeout)
            except Exception as exc:
                with lock:
                    errors.append(f"{event.id}: {type(exc).__name__}: {exc}")
            else:
                elapsed = (time.monotonic() - started) * 1000
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=user, name=f"user-{i}", daemon=True) for i in range(users)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - t0 < duration:
        time.sleep(0.5)
        with lock:
            done = len(latencies) + len(errors)
        samples.append(Sample(t=time.monotonic() - t0, completed=done, in_flight=users,
                              users=users, worker_rss_mb=watch.rss_mb()))  # fmt: skip
    stop.set()
    with lock:  # what finished within the duration
        counted_latencies, counted_errors = list(latencies), list(errors)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(timeout + 5)
    return _report(name, agent[0], elapsed, sent[0], counted_latencies, counted_errors,
                   samples, "Client threads", users)  # fmt: skip


def run_async_users(
    client: Client, make_event: Callable[[], Event], users: int, duration: float, *,
    name: str = "async", workers: WorkerWatch | None = None, timeout: float = 60.0,
) -> BenchReport:  # fmt: skip
    """Drive `users` coroutines for `duration` seconds, each ``await emit`` then ``await
    handle.result()``, on one event loop with one :class:`AsyncClient` (made with
    `client`'s app and settings)."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    agent = [""]
    watch = workers or WorkerWatch()
    samples: list[Sample] = []

    async def user(aclient: AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            event = make_event()
            started = time.monotonic()
            sent[0] += 1
            agent[0] = event.agent or agent[0]
            try:
                handle = await aclient.emit(event)
                await handle.result(timeout=timeout)
            except Exception as exc:
                errors.append(f"{event.id}: {type(exc).__name__}: {exc}")
            else:
                latencies.append((time.monotonic() - started) * 1000)

    async def main() -> tuple[list[float], list[str], float]:
        stop = asyncio.Event()
        async with AsyncClient(client.app, client.settings) as aclient:
            tasks = [asyncio.ensure_future(user(aclient, stop)) for _ in range(users)]
            t0 = time.monotonic()
            while time.monotonic() - t0 < duration:
                await asyncio.sleep(0.5)
                samples.append(Sample(t=time.monotonic() - t0,
                                      completed=len(latencies) + len(errors), in_flight=users,
                                      users=users, worker_rss_mb=watch.rss_mb()))  # fmt: skip
            counted = (list(latencies), list(errors), time.monotonic() - t0)
            stop.set()
            await asyncio.wait(tasks, timeout=timeout + 5)
            return counted

    # The loop a service's AsyncClient runs on: uvicorn's (FastAPI, the gateway) is uvloop
    # when installed, as the workers' (``[performance] event_loop``).
    with asyncio.Runner(
        loop_factory=lambda: _aio.new_loop(client.settings.performance.event_loop)
    ) as runner:
        counted_latencies, counted_errors, elapsed = runner.run(main())
    return _report(name, agent[0], elapsed, sent[0], counted_latencies, counted_errors,
                   samples, "AsyncClient coroutines", users)  # fmt: skip


def _report(name: str, agent: str, elapsed: float, sent: int, latencies: list[float],
            errors: list[str], samples: list[Sample], driver: str,
            users: int) -> BenchReport:  # fmt: skip
    """What finished within the duration, as a report."""
    return BenchReport(
        name=name, agent=agent, seconds=elapsed, sent=sent,
        completed=len(latencies) + len(errors), errors=len(errors), latencies_ms=latencies,
        samples=samples, error_examples=errors[:20], settings={"driver": driver, "users": users},
        in_flight_peak=users,
    )  # fmt: skip
