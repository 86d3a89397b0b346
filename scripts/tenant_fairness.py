"""Tenant fairness, measured: tenant B's latency alone, and while tenant A floods the same
agent with 10,000 events, with and without `[tenants] max_in_flight`.

    python scripts/tenant_fairness.py [--flood 10000] [--cap 16] [--latency 50ms]

A local cluster (private Redis, the mock LLM, one worker with AgentFlow's pool) runs the
built-in `chat` agent (one LLM call, the cache off). B sends one event every 50 ms and
waits for each result through `Client`; the table gives B's p50/p95 in each phase.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from agentflow.bench.stats import percentile


def _b_latencies(client: object, count: int, every: float) -> list[float]:
    """B's events, one every `every` seconds; each one's emit-to-result time in ms."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.perf_counter()
        handle = client.emit(_event("b"))  # type: ignore[attr-defined]
        handle.result(timeout=120)
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(64) as pool:
        for _ in range(count):
            pool.submit(one)
            time.sleep(every)
    return latencies


def _event(tenant: str) -> dict[str, object]:
    return {"type": "t", "agent": "chat", "tenant": tenant,
            "data": {"prompt": f"hello from {tenant}", "cache": False}}  # fmt: skip


def _phase(client: object, name: str, flood: int) -> dict[str, float]:
    """B's latencies after A emitted `flood` events (waits for the cluster to drain)."""
    _b_latencies(client, 20, 0.05)  # warm up
    for start in range(0, flood, 2_000):
        client.emit_many(_event("a") for _ in range(min(2_000, flood - start)))  # type: ignore[attr-defined]
    lat = _b_latencies(client, 100, 0.05)
    redis = client.redis  # type: ignore[attr-defined]
    inflight = client.keys.inflight  # type: ignore[attr-defined]
    while redis.zcard(inflight):  # let the flood drain before the next phase
        time.sleep(0.5)
    row = {"p50": percentile(lat, 50), "p95": percentile(lat, 95)}
    print(f"{name:<34} B p50 {row['p50']:8.1f} ms   B p95 {row['p95']:8.1f} ms", flush=True)
    return row


def main() -> None:
    from agentflow import Client, load_settings
    from agentflow.local_cluster import ClusterSpec, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--latency", default="50ms")
    args = parser.parse_args()
    env = {"AGENTFLOW_TENANTS__MAX_IN_FLIGHT": str(args.cap)}
    spec = ClusterSpec(workers=1, concurrency=100, mock_latency=args.latency, env=env)
    with LocalCluster(spec) as cluster:
        os.environ.update(cluster.env)
        runner = {"max_concurrent_events": 1_000_000, "event_buffer_size": 1_000_000}
        capped = Client(settings=load_settings(runner=runner))
        uncapped = Client(settings=load_settings(runner=runner,
                                                 tenants={"max_in_flight": None}))  # fmt: skip
        try:
            alone = _phase(capped, "B alone", 0)
            _phase(uncapped, "B during A's flood, no cap", args.flood)
            loaded = _phase(capped, f"B during A's flood, cap {args.cap}", args.flood)
        finally:
            capped.close()
            uncapped.close()
    print(f"B's p95 with the cap / B's p95 alone: {loaded['p95'] / alone['p95']:.2f}")


if __name__ == "__main__":
    main()
