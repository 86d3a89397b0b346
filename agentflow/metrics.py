"""statsd metrics, prefixed `agentflow.`: one client per process, a no-op when disabled.

Every layer reports through :func:`get_metrics`; ``[monitoring] enable_metrics = false``
turns all of it into no-ops. Names are dotted (``events.succeeded.<agent>``) so statsd,
Graphite and the Prometheus statsd exporter all read them.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import statsd

from agentflow.config import get_settings


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


_lock = threading.Lock()
_client: Metrics | None = None
_pid: int | None = None


def get_metrics() -> Metrics:
    """The process's statsd client (UDP, never blocks), or a no-op when metrics are off."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        with _lock:
            if _client is None or _pid != os.getpid():
                m = get_settings().monitoring
                _client = (
                    statsd.StatsClient(m.statsd_host, m.statsd_port, prefix=m.statsd_prefix)
                    if m.enable_metrics
                    else NullMetrics()
                )
                _pid = os.getpid()
    return _client


def reset_metrics() -> None:
    """Forget the client (tests, after a configuration change)."""
    global _client
    _client = None
