"""statsd metrics, prefixed `agentflow.`: one client per process, a no-op when disabled.

Every layer reports through :func:`get_metrics`; ``[monitoring] enable_metrics = false``
turns all of it into no-ops. Names are dotted (``events.succeeded.<agent>``) so statsd,
Graphite and the Prometheus statsd exporter all read them:

- ``events.received.<agent>``, ``events.succeeded.<agent>``, ``events.failed.<agent>``,
  ``events.retried.<agent>``, ``events.fanned_out.<agent>``, ``events.cancelled.<agent>``,
  ``events.suspended.<agent>`` (``WaitFor``) — counters, sent by the event runner on every path (asyncio pool, prefork, threads)
- ``event.latency.<agent>`` — enqueue (producer stamp) to done, ms
- ``event.queue_wait.<agent>`` — enqueue to start, ms
- ``event.run_time.<agent>`` — start to done in the worker, ms
- ``queue.depth.<agent>``, ``events.in_flight`` and ``dlq.size`` — gauges, from each
  worker's heartbeat
- ``queue.backlog.<agent>`` and ``tools.backlog`` — gauges: queued plus taken and not yet
  acked (prefetched or running), what an autoscaler counts; one worker per heartbeat
- ``redis.wiped`` — a worker found Redis came back empty

LLM calls add ``llm.call.<provider>`` (ms), ``llm.errors.<provider>``, ``llm.cache.hit`` /
``llm.cache.miss``, ``llm.tokens.{prompt,completion}.<model>``, ``llm.tokens.agent.<agent>``
and ``llm.cost_microusd.<model>`` (estimated cost, millionths of a USD); the shared breaker
``llm.breaker.open.<provider>`` (gauge 0/1), ``llm.breaker.opened.<provider>`` and
``llm.breaker.rejected.<provider>``; tools ``tool.call.<tool>`` (ms) and
``tool.errors.<tool>``.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
from typing import Protocol

import statsd

from agentflow.config import get_settings

log = logging.getLogger("agentflow.metrics")


class Metrics(Protocol):
    """The subset of the statsd client AgentFlow uses."""

    def incr(self, stat: str, count: int = 1, rate: float = 1) -> None: ...
    def timing(self, stat: str, delta: float, rate: float = 1) -> None: ...
    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False) -> None: ...


class NullMetrics:
    """Metrics switched off: every call does nothing."""

    def incr(self, stat: str, count: int = 1, rate: float = 1) -> None:
        """Do nothing."""

    def timing(self, stat: str, delta: float, rate: float = 1) -> None:
        """Do nothing."""

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False) -> None:
        """Do nothing."""


class BufferedStatsClient:
    """statsd's UDP client, sending from a thread of its own.

    ``sendto`` releases the GIL, and a thread that gives up the GIL waits up to the
    interpreter's switch interval (5 ms) to get it back while other threads run: a worker's
    event loop that sent a dozen stats per event spent a tenth of its time waiting so. Here
    a stat is only queued (no formatting, no system call); a daemon thread replays the
    queue every `flush_interval` seconds into statsd's own ``Pipeline``, which formats the
    stats and packs them into datagrams of up to `maxudpsize` bytes.
    """

    def __init__(self, host: str, port: int, prefix: str | None = None,
                 flush_interval: float = 0.1, maxudpsize: int = 512) -> None:  # fmt: skip
        self._client = statsd.StatsClient(host, port, prefix=prefix, maxudpsize=maxudpsize)
        # Bounded: should sending stall, the oldest stats go, not the worker's memory.
        self._queue: collections.deque[tuple[str, str, float, float, bool]] = collections.deque(
            maxlen=100_000
        )
        self._interval = flush_interval
        self._flushing = threading.Lock()
        self._closed = threading.Event()
        self._sender = threading.Thread(target=self._run, name="agentflow-statsd", daemon=True)
        self._sender.start()
        atexit.register(self.flush)

    def incr(self, stat: str, count: int = 1, rate: float = 1) -> None:
        """Queue a counter increment."""
        self._queue.append(("incr", stat, count, rate, False))

    def timing(self, stat: str, delta: float, rate: float = 1) -> None:
        """Queue a timing in milliseconds."""
        self._queue.append(("timing", stat, delta, rate, False))

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False) -> None:
        """Queue a gauge value (or a change of it, with `delta`)."""
        self._queue.append(("gauge", stat, value, rate, delta))

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.flush()
            except Exception:  # a stat is not worth the sender thread
                log.debug("statsd flush failed", exc_info=True)

    def flush(self) -> None:
        """Send every queued stat now (the sender thread, exit, or a caller that must)."""
        with self._flushing:
            queue = self._queue
            if not queue:
                return
            pipe = self._client.pipeline()
            while queue:
                kind, stat, value, rate, delta = queue.popleft()
                if not stat.isascii():  # statsd is ASCII; an agent's name may not be
                    stat = "".join(c if c.isascii() else "_" for c in stat)
                if kind == "incr":
                    pipe.incr(stat, int(value), rate)
                elif kind == "timing":
                    pipe.timing(stat, value, rate)
                else:
                    pipe.gauge(stat, value, rate, delta)
            pipe.send()

    def close(self) -> None:
        """Stop the sender thread, send what is queued, close the socket."""
        self._closed.set()
        if self._sender is not threading.current_thread():
            self._sender.join(5)
        atexit.unregister(self.flush)
        self.flush()
        with self._flushing:
            self._queue.clear()
            self._client.close()


_lock = threading.Lock()
_client: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's statsd client (queued, sent by its own thread within 100 ms), or a
    no-op when metrics are off. A forked child makes its own (its sender thread did not
    survive the fork)."""
    global _client
    client = _client
    if client is None:
        with _lock:
            client = _client
            if client is None:
                m = get_settings().monitoring
                client = _client = (
                    BufferedStatsClient(m.statsd_host, m.statsd_port, prefix=m.statsd_prefix)
                    if m.enable_metrics
                    else NullMetrics()
                )
    return client


def _forget_in_child() -> None:
    global _client, _lock
    _client, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def reset_metrics() -> None:
    """Forget the client (tests, after a configuration change); a buffered one sends what
    it holds and stops."""
    global _client
    with _lock:
        old, _client = _client, None
    if isinstance(old, BufferedStatsClient):
        old.close()
