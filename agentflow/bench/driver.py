"""The load driver: virtual users emit events and wait for results, closed loop.

Closed loop (the default): each virtual user keeps one event in flight: as soon as a result
arrives, a new event takes its place (so ``users`` = events in flight). Open loop (``rate``):
events go out at a fixed rate whatever the latency, and ``users`` only caps the events in
flight — the way to ask "at N events/s, what latency?". Events go out through :meth:`Client.emit_many`
in batches (one Redis round trip per batch); results are not polled one by one: a single
connection subscribes to the result backend's publications (Celery's Redis backend
PUBLISHes every stored result on the key's channel), and a sweep every
``sweep_interval`` seconds MGETs any result the subscription might have missed.

Latency is what a producer sees: from just before the event is published to the moment its
result reaches the producer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import psutil

from agentflow._redis.connection import open_redis
from agentflow.bench.stats import BenchReport, Sample
from agentflow.client import Client
from agentflow.errors import BackpressureError
from agentflow.models import Event

FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@dataclass
class Progress:
    """What the progress bar shows."""

    elapsed: float
    total: float
    """Seconds (duration mode) or events (request mode) the run aims for."""
    done: float
    completed: int
    errors: int
    in_flight: int
    users: int


class WorkerWatch:
    """Total RSS and CPU time of the worker processes (and their pool children), read with
    psutil."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self._explicit = pids

    @property
    def pids(self) -> list[int]:
        """The worker processes watched (none: every celery worker on this host)."""
        return list(self._explicit or [])

    def _roots(self) -> list[psutil.Process]:
        if self._explicit is not None:
            out = []
            for pid in self._explicit:
                try:
                    out.append(psutil.Process(pid))
                except psutil.Error:
                    continue
            return out
        return find_local_workers()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker processes and their children have used so
        far; a process that exited since the last call no longer counts."""
        total = 0.0
        seen: set[int] = set()
        for root in self._roots():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                try:
                    times = p.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
        return total

    def rss_mb(self) -> float:
        """Sum of RSS over the worker processes and their children, in MB."""
        total = 0
        seen: set[int] = set()
        for root in self._roots():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
        return total / 1e6


def find_local_workers() -> list[psutil.Process]:
    """`celery ... worker` main processes of AgentFlow on this host (for a running cluster)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "worker" in cmd and any("celery" in c for c in cmd) and "agentflow" in cmd:
            try:
                parent = p.parent()
            except psutil.Error:
                parent = None
            pcmd = parent.cmdline() if parent is not None else []
            if not ("worker" in pcmd and any("celery" in c for c in pcmd)):
                found.append(p)
    return found


class LoadDriver:
    """Run one load shape against a cluster and return a :class:`BenchReport`."""

    def __init__(
        self,
        client: Client,
        make_event: Callable[[], Event],
        users: Callable[[float], int],
        *,
        name: str = "benchmark",
        duration: float | None = None,
        requests: int | None = None,
        drain_timeout: float = 30.0,
        sample_interval: float = 0.5,
        sweep_interval: float = 2.0,
        batch_size: int = 500,
        workers: WorkerWatch | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        rate: float | None = None,
    ) -> None:
        if duration is None and requests is None:
            raise ValueError("give a duration or a number of requests")
        self.client = client
        self.make_event = make_event
        self.users = users
        self.name = name
        self.duration = duration
        self.requests = requests
        self.drain_timeout = drain_timeout
        self.sample_interval = sample_interval
        self.sweep_interval = sweep_interval
        self.batch_size = batch_size
        self.workers = workers or WorkerWatch()
        self.on_progress = on_progress
        self.rate = rate
        backend = client.app.backend
        prefix = backend.task_keyprefix
        self._key_prefix = prefix.decode() if isinstance(prefix, bytes) else str(prefix)
        self._results = open_redis(str(client.app.conf.result_backend), client.settings,
                                   max_connections=8)  # fmt: skip
        self._cond = threading.Condition()
        self._pending: dict[str, float] = {}
        self._latencies: list[float] = []
        self._errors = 0
        self._completed = 0
        self._sent = 0
        self._examples: list[str] = []
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._t0 = 0.0
        self._last_done = 0.0
        self._current_users = 0
        self._peak_in_flight = 0
        self._agent = ""

    # -- completions -------------------------------------------------------------------------
    def _complete(self, task_id: str, meta: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._cond:
            started = self._pending.pop(task_id, None)
            if started is None:
                return
            self._completed += 1
            self._last_done = now
            if meta.get("status") == "SUCCESS":
                self._latencies.append((now - started) * 1000)
            else:
                self._errors += 1
                if len(self._examples) < 20:
                    self._examples.append(f"{task_id}: {meta.get('status')} {meta.get('result')}")
            self._cond.notify_all()

    def _listen(self, ready: threading.Event) -> None:
        pubsub = self._results.pubsub()
        pubsub.psubscribe(self._key_prefix + "*")
        prefix_len = len(self._key_prefix)
        try:
            pubsub.get_message(timeout=5)  # the subscription's confirmation
            ready.set()
            while not self._stop.is_set():
                msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg is None:
                    continue
                task_id = msg["channel"][prefix_len:].decode()
                if task_id not in self._pending:  # another producer's event
                    continue
                meta = json.loads(msg["data"])
                if meta.get("status") in FINAL_STATES:
                    self._complete(task_id, meta)
        finally:
            ready.set()
            pubsub.close()

    def _sweep(self) -> None:
        """MGET the results of events that have been pending for a while (missed publishes)."""
        cutoff = time.monotonic() - self.sweep_interval
        with self._cond:
            old = [tid for tid, t in self._pending.items() if t < cutoff]
        for i in range(0, len(old), 1000):
            chunk = old[i : i + 1000]
            raws = cast(list[Any], self._results.mget([self._key_prefix + t for t in chunk]))
            for tid, raw in zip(chunk, raws, strict=True):
                if raw is not None:
                    meta = json.loads(raw)
                    if meta.get("status") in FINAL_STATES:
                        self._complete(tid, meta)

    def _take_sample(self, now: float) -> None:
        with self._cond:
            completed, in_flight = self._completed, len(self._pending)
            self._peak_in_flight = max(self._peak_in_flight, in_flight)
        self._samples.append(Sample(
            t=round(now - self._t0, 3), completed=completed, in_flight=in_flight,
            users=self._current_users, worker_rss_mb=round(self.workers.rss_mb(), 1),
        ))  # fmt: skip

    def _sample(self) -> None:
        last_sweep = time.monotonic()
        self._take_sample(last_sweep)
        while not self._stop.wait(self.sample_interval):
            now = time.monotonic()
            self._take_sample(now)
            if now - last_sweep >= self.sweep_interval:
                last_sweep = now
                self._sweep()
            if self.on_progress is not None:
                self.on_progress(self._progress(now))

    def _progress(self, now: float) -> Progress:
        elapsed = now - self._t0
        if self.requests is not None:
            total, done = float(self.requests), float(self._completed)
        else:
            total, done = float(self.duration or 0), min(elapsed, float(self.duration or 0))
        return Progress(elapsed, total, done, self._completed, self._errors,
                        len(self._pending), self._current_users)  # fmt: skip

    # -- the run -----------------------------------------------------------------------------
    def _want_more(self, elapsed: float) -> bool:
        if self.requests is not None and self._sent >= self.requests:
            return False
        return not (self.duration is not None and elapsed >= self.duration)

    def _emit(self, count: int) -> None:
        events = [self.make_event() for _ in range(count)]
        if not self._agent and events:
            self._agent = str(events[0].agent)
        now = time.monotonic()
        with self._cond:
            for e in events:
                self._pending[e.id] = now
            self._sent += count
            self._peak_in_flight = max(self._peak_in_flight, len(self._pending))
        try:
            self.client.emit_many(events, timeout=5.0)
        except BackpressureError as exc:
            with self._cond:
                for e in events[exc.sent :]:
                    self._pending.pop(e.id, None)
                    self._errors += 1
                    self._completed += 1
                if len(self._examples) < 20:
                    self._examples.append(str(exc))

    def run(self) -> BenchReport:
        """Drive the load, wait for the last results (up to `drain_timeout`), report."""
        ready = threading.Event()
        listener = threading.Thread(target=self._listen, args=(ready,), daemon=True,
                                    name="bench-results")  # fmt: skip
        listener.start()
        ready.wait(10)
        self._t0 = time.monotonic()
        sampler = threading.Thread(target=self._sample, daemon=True, name="bench-sampler")
        sampler.start()
        try:
            while True:
                elapsed = time.monotonic() - self._t0
                if not self._want_more(elapsed):
                    break
                target = self.users(elapsed)
                self._current_users = target
                with self._cond:
                    room = target - len(self._pending)
                    if room <= 0:
                        self._cond.wait(0.01)
                        continue
                if self.rate is not None:
                    # Open loop: send at `rate` events/s; `users` only caps what is in flight.
                    due = int(self.rate * elapsed) + 1 - self._sent
                    if due <= 0:
                        time.sleep(min(0.005, 1.0 / self.rate))
                        continue
                    room = min(room, due)
                if self.requests is not None:
                    room = min(room, self.requests - self._sent)
                self._emit(min(room, self.batch_size))
            deadline = time.monotonic() + self.drain_timeout
            with self._cond:
                while self._pending and time.monotonic() < deadline:
                    self._cond.wait(0.05)
            self._sweep()
        finally:
            self._stop.set()
            sampler.join(5)
            listener.join(5)
            self._take_sample(time.monotonic())  # short runs end between two samples
        with self._cond:
            lost = list(self._pending)
            self._pending.clear()
        self._errors += len(lost)
        self._completed += len(lost)
        if lost and len(self._examples) < 20:
            self._examples.append(f"{len(lost)} event(s) without a result after the drain")
        end = self._last_done if self._last_done else time.monotonic()
        self._results.close()
        return BenchReport(
            name=self.name, agent=self._agent, seconds=max(end - self._t0, 1e-6),
            sent=self._sent, completed=self._completed, errors=self._errors,
            latencies_ms=self._latencies, samples=self._samples,
            error_examples=self._examples, in_flight_peak=self._peak_in_flight,
        )  # fmt: skip
