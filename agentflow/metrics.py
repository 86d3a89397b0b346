"""statsd metrics, prefixed `agentflow.`: one client per process, a no-op when disabled.

Every layer reports through :func:`get_metrics`; ``[monitoring] enable_metrics = false``
turns all of it into no-ops. Names are dotted (``events.succeeded.<agent>``) so statsd,
Graphite and the Prometheus statsd exporter all read them:

- ``events.received.<agent>``, ``events.succeeded.<agent>``, ``events.failed.<agent>``,
  ``events.retried.<agent>``, ``events.fanned_out.<agent>``, ``events.cancelled.<agent>``
  — counters, sent by the event runner on every path (asyncio pool, prefork, threads)
- ``event.latency.<agent>`` — enqueue (producer stamp) to done, ms
- ``event.queue_wait.<agent>`` — enqueue to start, ms
- ``event.run_time.<agent>`` — start to done in the worker, ms
- ``queue.depth.<agent>`` and ``events.in_flight`` — gauges, from each worker's heartbeat
- ``redis.wiped`` — a worker found Redis came back empty

LLM calls add ``llm.call.<provider>`` (ms), ``llm.errors.<provider>``, ``llm.cache.hit`` /
``llm.cache.miss`` and ``llm.tokens.{prompt,completion}.<model>``; the shared breaker
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


class BufferedStatsClient(statsd.StatsClient):
    """statsd's UDP client, sending from a thread of its own.

    ``sendto`` releases the GIL, and a thread that gives up the GIL waits up to the
    interpreter's switch interval (5 ms) to get it back while other threads run: a worker's
    event loop that sent a dozen stats per event spent a tenth of its time waiting so. Here
    a stat is queued (no system call) and a daemon thread sends the queue every
    `flush_interval` seconds, packed into datagrams of up to `maxudpsize` bytes as statsd's
    own ``Pipeline`` packs them.
    """

    def __init__(self, host: str, port: int, prefix: str | None = None,
                 flush_interval: float = 0.1, maxudpsize: int = 512) -> None:  # fmt: skip
        super().__init__(host, port, prefix=prefix, maxudpsize=maxudpsize)
        # Bounded: should sending stall, the oldest stats go, not the worker's memory.
        self._queue: collections.deque[str] = collections.deque(maxlen=100_000)
        self._interval = flush_interval
        self._flushing = threading.Lock()
        self._closed = threading.Event()
        self._sender = threading.Thread(target=self._run, name="agentflow-statsd", daemon=True)
        self._sender.start()
        atexit.register(self.flush)

    def _after(self, data: str) -> None:  # statsd's hook between formatting and sending
        if data:
            if not data.isascii():  # statsd is ASCII; an agent's name may not be
                data = "".join(c if c.isascii() else "_" for c in data)
            self._queue.append(data)

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.flush()
            except Exception:  # a stat is not worth the sender thread
                log.debug("statsd flush failed", exc_info=True)

    def flush(self) -> None:
        """Send every queued stat now (the sender thread, exit, or a caller that must)."""
        with self._flushing:
            queue, limit = self._queue, self._maxudpsize
            if self._sock is None:  # closed
                queue.clear()
                return
            packet = ""
            while queue:
                stat = queue.popleft()
                if packet and len(packet) + len(stat) + 1 >= limit:
                    self._send(packet)
                    packet = stat
                else:
                    packet = f"{packet}\n{stat}" if packet else stat
            if packet:
                self._send(packet)

    def close(self) -> None:
        """Stop the sender thread, send what is queued, close the socket."""
        self._closed.set()
        if self._sender is not threading.current_thread():
            self._sender.join(5)
        atexit.unregister(self.flush)
        self.flush()
        with self._flushing:
            super().close()


_lock = threading.Lock()
_client: Metrics | None = None
_pid: int | None = None


def get_metrics() -> Metrics:
    """The process's statsd client (queued, sent by its own thread within 100 ms), or a
    no-op when metrics are off."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        with _lock:
            if _client is None or _pid != os.getpid():
                m = get_settings().monitoring
                _client = (
                    BufferedStatsClient(m.statsd_host, m.statsd_port, prefix=m.statsd_prefix)
                    if m.enable_metrics
                    else NullMetrics()
                )
                _pid = os.getpid()
    return _client


def reset_metrics() -> None:
    """Forget the client (tests, after a configuration change); a buffered one sends what
    it holds and stops."""
    global _client
    with _lock:
        old, _client = _client, None
    if isinstance(old, BufferedStatsClient):
        old.close()
