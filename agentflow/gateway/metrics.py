"""The gateway's Prometheus metrics (prometheus_client, a registry of its own)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest


class GatewayMetrics:
    """Requests by route and status, their latency, open SSE streams, events emitted."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("agentflow_gateway_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram(
            "agentflow_gateway_request_seconds", "Time to answer (SSE: to the first byte)",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )  # fmt: skip
        self.streams = Gauge("agentflow_gateway_open_streams", "SSE streams open now",
                             registry=self.registry)  # fmt: skip
        self.emitted = Counter("agentflow_gateway_events", "Events emitted", ["agent"],
                               registry=self.registry)  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        children = self._children.get((route, method, status))
        if children is None:  # prometheus_client's labels() builds a key each call: once
            children = self._children[(route, method, status)] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def stream_opened(self, delta: int) -> None:
        """An SSE stream opened (+1) or closed (-1)."""
        self.streams.inc(delta)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
