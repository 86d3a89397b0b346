"""The demo behind `make demo`: a local cluster, a few hundred events, a summary line.

It starts a private embedded Redis, the mock LLM and one worker, emits events through the
built-in agents (`echo` with sessions, `chat` calling the mock LLM, `noop`), waits for every
result, checks the session counters, shows the dead-letter queue catching a malformed
message, and prints events/s with p50/p95/p99 latency and the error count.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis

from agentflow.bench.stats import percentile
from agentflow.config import mask_url
from agentflow.local_cluster import ClusterSpec, LocalCluster


@dataclass
class DemoReport:
    """What the demo measured."""

    events: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    per_agent: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    state_ok: bool = True

    @property
    def events_per_second(self) -> float:
        """Completed events per wall-clock second, emit of the first to result of the last."""
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        return percentile(self.latencies_ms, q)

    def summary(self) -> str:
        """The one-line summary the demo prints."""
        return (
            f"{self.events} events in {self.seconds:.2f}s: {self.events_per_second:.0f} events/s, "
            f"p50 {self.percentile(50):.1f} ms, p95 {self.percentile(95):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms, errors {self.errors}"
        )


def demo_events(count: int, sessions: int = 10) -> list[dict[str, Any]]:
    """`count` events spread over echo (with sessions), chat, noop and a tool fan-out."""
    events: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 4
        if kind == 3:
            events.append({"type": "demo.tools", "agent": "tools", "data": {"calls": [
                {"name": "sleep", "args": {"seconds": 0.05}},
                {"name": "sleep", "args": {"seconds": 0.05}},
                {"name": "add", "args": {"a": i, "b": 1}},
            ]}})  # fmt: skip
            continue
        if kind == 0:
            events.append({"type": "demo.echo", "agent": "echo", "data": {"i": i},
                           "session_id": f"demo-session-{i % sessions}"})  # fmt: skip
        elif kind == 1:
            events.append({"type": "demo.chat", "agent": "chat",
                           "data": {"prompt": f"say hello to user {i}", "cache": False}})  # fmt: skip
        else:
            events.append({"type": "demo.noop", "agent": "noop", "data": {}})
    return events


def wait_for_results(
    client: redis.Redis, key_for: Callable[[str], str], ids: Iterable[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Poll the result backend (pipelined) until every id has a result or `timeout` passes."""
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        batch = list(pending)
        for i in range(0, len(batch), 500):
            chunk = batch[i : i + 500]
            for event_id, raw in zip(
                chunk, cast(Any, client.mget([key_for(x) for x in chunk])), strict=True
            ):
                if raw is None:
                    continue
                meta = json.loads(raw)
                if meta.get("status") in ("SUCCESS", "FAILURE"):
                    done[event_id] = meta
                    pending.discard(event_id)
        if pending:
            time.sleep(0.02)
    for event_id in pending:
        done[event_id] = {"status": "TIMEOUT", "result": None}
    return done


def _done_time(meta: dict[str, Any]) -> float | None:
    value = meta.get("date_done")
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def run_demo(
    count: int = 300,
    workers: int = 2,
    concurrency: int = 100,
    latency: str = "50ms",
    redis_url: str | None = None,
    echo: Callable[[str], None] = print,
) -> DemoReport:
    """Run the whole demo and return its report; everything started is stopped again."""
    spec = ClusterSpec(workers=workers, concurrency=concurrency, redis_url=redis_url,
                       mock_latency=latency, key_prefix="agentflow-demo",
                       env={"AGENTFLOW_LLM__OPENAI__MAX_CONNECTIONS": str(concurrency)})  # fmt: skip
    echo("starting embedded Redis, mock LLM and worker ..." if not redis_url else "starting ...")
    with LocalCluster(spec) as cluster:
        echo(f"redis {mask_url(cluster.redis_url)}  mock LLM {cluster.mock_url}  "
             f"workers {cluster.worker_pids()}")  # fmt: skip
        os.environ.update(cluster.env)
        from agentflow._redis import connection
        from agentflow.celery_app import app
        from agentflow.client import Client
        from agentflow.config import get_settings, reset_settings
        from agentflow.dlq import DeadLetterQueue

        reset_settings()
        connection.reset()
        app.conf.broker_url = cluster.redis_url
        app.conf.result_backend = cluster.redis_url
        client = Client(app=app)
        backend_redis = redis.Redis.from_url(cluster.redis_url)
        try:
            events = demo_events(count)
            started = time.time()
            handles = client.emit_many(events)
            emitted_at = {h.id: h.event.created_at.timestamp() for h in handles}
            results = wait_for_results(
                backend_redis, lambda i: app.backend.get_key_for_task(i).decode(),
                emitted_at, timeout=120,
            )  # fmt: skip
            finished = max((_done_time(m) or time.time()) for m in results.values())
            latencies: list[float] = []
            errors = 0
            per_agent: dict[str, int] = {}
            for h in handles:
                meta = results[h.id]
                if meta["status"] != "SUCCESS":
                    errors += 1
                    echo(f"  error: {h.event.agent} {h.id}: {meta['status']} {meta.get('result')}")
                    continue
                done_at = _done_time(meta) or time.time()
                latencies.append((done_at - emitted_at[h.id]) * 1000)
                name = str(h.event.agent)
                per_agent[name] = per_agent.get(name, 0) + 1
            report = DemoReport(
                events=len(handles), seconds=max(finished - started, 1e-6),
                latencies_ms=latencies, errors=errors, per_agent=per_agent,
            )  # fmt: skip
            report.state_ok = _check_sessions(client, events, echo)
            report.dead_lettered = _show_dead_letter(backend_redis, get_settings().broker.key_prefix,
                                                     DeadLetterQueue, echo)  # fmt: skip
        finally:
            client.close()
            backend_redis.close()
        echo("stopping worker, mock LLM and Redis ...")
    return report


def _check_sessions(client: Any, events: list[dict[str, Any]], echo: Callable[[str], None]) -> bool:
    from agentflow.state import StateStore

    expected: dict[str, int] = {}
    for e in events:
        if e["agent"] == "echo":
            expected[e["session_id"]] = expected.get(e["session_id"], 0) + 1
    store = StateStore(client.redis, prefix=client.settings.broker.key_prefix)
    ok = all(store.load(s).get("events") == n for s, n in expected.items())
    echo(f"session state: {len(expected)} sessions, event counters "
         f"{'all exact' if ok else 'WRONG'}")  # fmt: skip
    return ok


def _show_dead_letter(
    client: redis.Redis, prefix: str, dlq_cls: Any, echo: Callable[[str], None]
) -> int:
    """Push a malformed message by hand and show that it lands in the DLQ with its reason."""
    client.lpush("agentflow.agent.echo", b"this is not a celery message")
    dlq = dlq_cls(client, prefix)
    deadline = time.monotonic() + 10
    while len(dlq) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for entry in dlq.list():
        echo(f"dead-letter queue: {entry.queue}: {entry.reason}")
    return len(dlq)
