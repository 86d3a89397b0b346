"""Load as an application makes it: threads that each emit an event through :class:`Client`
and wait for its result with ``handle.result()``, one after another (closed loop).

The lean driver (:mod:`agentflow.bench.driver`) batches emits and reads every result from
one subscription; this is what a user's own code costs — one ``emit`` and one blocking
``result`` per event, from as many threads as there are users, on one shared client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agentflow.bench.driver import WorkerWatch
from agentflow.bench.stats import BenchReport, Sample
from agentflow.client import Client
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
    return BenchReport(
        name=name, agent=agent[0], seconds=elapsed, sent=sent[0],
        completed=len(counted_latencies) + len(counted_errors), errors=len(counted_errors),
        latencies_ms=counted_latencies, samples=samples, error_examples=counted_errors[:20],
        settings={"driver": "Client threads", "users": users}, in_flight_peak=users,
    )  # fmt: skip
