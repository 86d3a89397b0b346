"""What a benchmark run measured, and the numbers derived from it (percentiles, rates)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def histogram(values: list[float], bins: int = 30) -> list[tuple[float, float, int]]:
    """(low, high, count) buckets over [min, p99.9] of the values; the tail folds in the last."""
    if not values:
        return []
    low = min(values)
    high = max(percentile(values, 99.9), low + 1e-9)
    width = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - low) / width)))] += 1
    return [(low + i * width, low + (i + 1) * width, c) for i, c in enumerate(counts)]


@dataclass
class Sample:
    """One reading of the cluster taken during the run (every sample interval)."""

    t: float
    """Seconds since the run started."""
    completed: int
    in_flight: int
    users: int
    worker_rss_mb: float
    queued: int = 0


@dataclass
class BenchReport:
    """A finished run: the raw latencies, the counters and the periodic samples."""

    name: str
    agent: str
    seconds: float
    sent: int
    completed: int
    errors: int
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    in_flight_peak: int = 0
    """Peak events in flight as the driver counted them when emitting."""

    @property
    def requests_per_second(self) -> float:
        """Successful events per second of wall-clock time (first emit to last result)."""
        ok = self.completed - self.errors
        return ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """Failed or unanswered events over events sent."""
        return self.errors / self.sent if self.sent else 0.0

    @property
    def avg_ms(self) -> float:
        """Mean latency of successful events."""
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in ms."""
        return percentile(self.latencies_ms, q)

    @property
    def max_worker_rss_mb(self) -> float:
        """Peak total RSS of the worker processes seen in the samples (MB)."""
        return max((s.worker_rss_mb for s in self.samples), default=0.0)

    @property
    def max_in_flight(self) -> int:
        """Peak events in flight (emitted, not finished) seen in the samples."""
        return max(self.in_flight_peak, max((s.in_flight for s in self.samples), default=0))

    def summary(self) -> dict[str, Any]:
        """The headline numbers, JSON-ready."""
        return {
            "name": self.name,
            "agent": self.agent,
            "seconds": round(self.seconds, 3),
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "requests_per_second": round(self.requests_per_second, 1),
            "latency_ms": {
                "avg": round(self.avg_ms, 2),
                "p50": round(self.p(50), 2),
                "p95": round(self.p(95), 2),
                "p99": round(self.p(99), 2),
                "max": round(max(self.latencies_ms, default=0.0), 2),
            },
            "worker_rss_mb_max": round(self.max_worker_rss_mb, 1),
            "in_flight_max": self.max_in_flight,
            "settings": self.settings,
            "error_examples": self.error_examples[:5],
        }

    def to_json(self, raw: bool = False) -> dict[str, Any]:
        """Summary plus the time series (and the raw latencies when `raw`)."""
        data = self.summary()
        data["samples"] = [asdict(s) for s in self.samples]
        if raw:
            data["latencies_ms"] = [round(v, 3) for v in self.latencies_ms]
        return data

    def one_line(self) -> str:
        """A single summary line for logs."""
        return (
            f"{self.name}: {self.requests_per_second:.0f} req/s, avg {self.avg_ms:.1f} ms, "
            f"p50 {self.p(50):.1f} / p95 {self.p(95):.1f} / p99 {self.p(99):.1f} ms, "
            f"errors {self.errors}/{self.sent}, worker RSS {self.max_worker_rss_mb:.0f} MB, "
            f"in flight ≤ {self.max_in_flight}"
        )
