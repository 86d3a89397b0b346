"""The scripted benchmark submitter: standard workloads, AgentFlow beside plain Celery.

For each workload it runs, in the same session and on the same Redis and mock LLM:

- AgentFlow as shipped (``--local`` cluster: worker processes on AgentFlow's asyncio pool),
  driven by the lean load driver and, for closed loops, through ``Client`` as an
  application uses it (a thread per user: ``emit``, then ``handle.result()``) and through
  ``AsyncClient`` (a coroutine per user, the same two calls awaited);
- plain Celery with default settings (``celery worker``: prefork, one process per core);
- plain Celery tuned for I/O (``-P threads -c 200``).

Every system gets the same load from the same driver (agentflow.bench.driver: closed loop
with N users, or open loop at a rate); the producer's CPU per event is the driver process's
CPU time over the events it sent. The table goes into docs/benchmarks.md between
the ``<!-- results -->`` markers, with the raw summaries in docs/benchmarks.json.

    python scripts/benchmark_submitter.py                  # W0 to W3 (and W2http[x]), 20 s each
    python scripts/benchmark_submitter.py --duration 60 --workloads W0   # other rows stay

Redis: ``--redis-url`` (default redis://127.0.0.1:6379/13, flushed before each run), else
an embedded one when nothing answers there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chord, group

from agentflow.bench.driver import LoadDriver, WorkerWatch
from agentflow.bench.local import LocalOptions
from agentflow.bench.run import RunOptions, run
from agentflow.bench.stats import BenchReport
from agentflow.bench.workloads import WORKLOADS
from agentflow.config import load_settings
from agentflow.mock_llm import start_mock_llm_process
from agentflow.models import Event

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
RAW = ROOT / "docs" / "benchmarks.json"
BEGIN, END = "<!-- results -->", "<!-- /results -->"


@dataclass
class Shape:
    """The load one row gets."""

    users: int
    rate: float | None = None

    def label(self) -> str:
        if self.rate is None:
            return f"{self.users} users (closed loop)"
        return f"{self.rate:g}/s open loop, ≤{self.users} in flight"


SHAPES: dict[str, list[Shape]] = {
    "W0": [Shape(50)],
    "W1": [Shape(200), Shape(200, rate=400), Shape(200, rate=500)],
    "W2": [Shape(100), Shape(100, rate=200), Shape(100, rate=250)],
    "W2http": [Shape(100)],
    "W2httpx": [Shape(100)],
    "W3": [Shape(200), Shape(200, rate=400)],
}
PLAIN_TASK = {"W0": "plain.noop", "W1": "plain.chat", "W2": "plain.after_tools",
              "W2http": "plain.after_tools", "W3": "plain.chat_session"}  # fmt: skip
PLAIN_TOOL = {"W2": "plain.sleep", "W2http": "plain.http_tool"}
"""The chord members of a fan-out workload on plain Celery."""
LEAN_ONLY = {"W2httpx"}
"""Workloads measured on AgentFlow with the lean driver only (W2httpx: a user's own
httpx.AsyncClient in AgentFlow's tools, beside W2http in the same session)."""


class PlainClient:
    """What LoadDriver needs from a client, for the plain Celery app: send_task per event."""

    def __init__(self, url: str, task: str, tool: str | None = None) -> None:
        self.app = Celery("plain-producer", broker=url, backend=url)
        self.app.conf.update(task_serializer="json", result_serializer="json")
        self.settings = load_settings(broker={"url": url})  # what LoadDriver reads its Redis with
        self.task = task
        self.tool = tool

    def emit_many(self, events: list[Event], timeout: float | None = None) -> None:
        for e in events:
            body = e.model_dump(mode="json")
            if self.tool is not None:  # W2: chord(3 x tool) -> chat
                seconds = float(e.data.get("tool_seconds", 0.02))
                header = group(self.app.signature(self.tool, args=(seconds,))
                               for _ in range(int(e.data.get("tools", 3))))  # fmt: skip
                callback = self.app.signature(self.task, args=(body,), task_id=e.id)
                chord(header, callback).apply_async()
            else:
                self.app.send_task(self.task, args=[body], task_id=e.id)

    def close(self) -> None:
        self.app.close()


def plain_row(
    workload: str, shape: Shape, url: str, mock_url: str, pool_args: list[str], seconds: float
) -> BenchReport:
    """Start the plain Celery worker, drive the load, stop it."""
    redis.Redis.from_url(url).flushdb()
    env = {**os.environ, "PLAIN_CELERY_URL": url, "PLAIN_CELERY_LLM_URL": mock_url + "/v1"}
    log = open(f"/tmp/plain-celery-{os.getpid()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "plain_celery_app", "worker", "-l", "WARNING",
         "--without-mingle", "--without-gossip", "--without-heartbeat", *pool_args],
        cwd=Path(__file__).parent, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    client = PlainClient(url, PLAIN_TASK[workload], PLAIN_TOOL.get(workload))
    try:
        _wait_plain(client)
        make = WORKLOADS[workload].events()
        users = shape.users
        LoadDriver(client, make, lambda t: users, name="warmup", duration=1.0,  # type: ignore[arg-type]
                   workers=WorkerWatch([proc.pid]), rate=shape.rate).run()  # fmt: skip
        cpu_started = time.process_time()
        watch = WorkerWatch([proc.pid])
        workers_cpu = watch.cpu_seconds()
        report = LoadDriver(
            client, make, lambda t: users, name=workload, duration=seconds,  # type: ignore[arg-type]
            workers=watch, rate=shape.rate,
        ).run()  # fmt: skip
        report.settings["producer_cpu_us_per_event"] = round(
            (time.process_time() - cpu_started) * 1e6 / max(1, report.sent)
        )
        report.settings["worker_cpu_us_per_event"] = round(
            (watch.cpu_seconds() - workers_cpu) * 1e6 / max(1, report.completed)
        )
        return report
    finally:
        client.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait_plain(client: PlainClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = client.app.control.ping(timeout=0.5)
        if replies:
            return
    raise RuntimeError("plain Celery worker did not answer ping")


def agentflow_row(
    workload: str,
    shape: Shape,
    url: str,
    workers: int,
    concurrency: int,
    seconds: float,
    driver: str = "lean",
) -> BenchReport:
    """AgentFlow's own --local cluster on the same Redis (its own mock LLM, same latency);
    ``driver="client"``: a thread per user calling ``Client.emit`` and ``handle.result()``;
    ``driver="async"``: a coroutine per user doing the same through ``AsyncClient``."""
    redis.Redis.from_url(url).flushdb()
    local = LocalOptions(workers=workers, concurrency=concurrency, redis_url=url,
                         key_prefix="agentflow-bench")  # fmt: skip
    opts = RunOptions(workload=WORKLOADS[workload], users=lambda t: shape.users, name=workload,
                      duration=seconds, local=local, max_users=shape.users,
                      rate=shape.rate, driver=driver)  # type: ignore[arg-type]  # fmt: skip
    return run(opts)


def _redis_url(wanted: str) -> tuple[str, Any]:
    try:
        redis.Redis.from_url(wanted, socket_connect_timeout=1).ping()
        return wanted, None
    except redis.RedisError:
        import tempfile

        from agentflow._redis.embedded import ensure_embedded, stop_embedded

        folder = Path(tempfile.mkdtemp(prefix="agentflow-bench-redis-"))
        return ensure_embedded(folder), lambda: stop_embedded(folder)


def row(system: str, config: str, shape: Shape, report: BenchReport) -> dict[str, Any]:
    s = report.summary()
    return {
        "system": system,
        "config": config,
        "load": shape.label(),
        **s,
        "producer_cpu_us_per_event": report.settings.get("producer_cpu_us_per_event"),
        "worker_cpu_us_per_event": report.settings.get("worker_cpu_us_per_event"),
    }


def write_docs(rows: list[dict[str, Any]], seconds: float) -> None:
    """Put the table between the markers of docs/benchmarks.md; the raw data beside it."""
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    text = DOCS.read_text() if DOCS.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    earlier = re.search(r"Run (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", text.partition(BEGIN)[2])
    runs: dict[str, list[str]] = {}
    for r in rows:  # rows kept from an earlier session say when they ran
        r.setdefault("run_at", earlier.group(1) if earlier else "earlier")
        names = runs.setdefault(str(r["run_at"]), [])
        if r["workload"] not in names:
            names.append(r["workload"])
    when = "; ".join(f"{at} UTC ({', '.join(names)})" for at, names in sorted(runs.items()))
    lines = [
        BEGIN,
        f"Run {when} on {machine}; {seconds:g} s per row after "
        "1 s of warm-up; producer, Redis, mock LLM (50 ms) and workers on the same machine.",
        "",
        "| workload | system | config | load | events/s | p50 ms | p95 ms | p99 ms | errors "
        "| worker RSS MB | worker CPU µs/event | producer CPU µs/event "
        "| vs plain Celery default |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["system"] == "plain Celery" and r["config"].startswith("default"):
            base[(r["workload"], r["load"])] = r["requests_per_second"]
    for r in rows:
        lat = r["latency_ms"]
        b = base.get((r["workload"], r["load"]))
        ratio = f"{r['requests_per_second'] / b:.2f}x" if b else "-"
        cpu = r.get("producer_cpu_us_per_event")
        worker_cpu = r.get("worker_cpu_us_per_event")
        lines.append(
            f"| {r['workload']} | {r['system']} | {r['config']} | {r['load']} | "
            f"{r['requests_per_second']:.0f} | {lat['p50']:.0f} | {lat['p95']:.0f} | "
            f"{lat['p99']:.0f} | {r['errors']} | {r['worker_rss_mb_max']:.0f} | "
            f"{'-' if worker_cpu is None else worker_cpu} | {'-' if cpu is None else cpu} | "
            f"{ratio} |"
        )
    lines.append(END)
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOCS.write_text(head + "\n".join(lines) + tail)
    RAW.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per row")
    parser.add_argument("--workloads", default="W0,W1,W2,W2http,W2httpx,W3")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--workers", type=int, default=2, help="AgentFlow worker processes")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = parser.parse_args()
    session = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    url, stop_redis = _redis_url(args.redis_url)
    mock = start_mock_llm_process(port=0, latency="50ms")
    rows: list[dict[str, Any]] = []
    try:
        for workload in args.workloads.split(","):
            for shape in SHAPES[workload]:
                af = f"{args.workers} workers -c {args.concurrency}, asyncio pool"
                runs: list[tuple[str, str, list[str] | None]] = [
                    ("AgentFlow", af, None),
                    *([("AgentFlow", af + ", via Client (a thread per user)", ["client"]),
                       ("AgentFlow", af + ", via AsyncClient (a coroutine per user)",
                        ["async"])]
                      if shape.rate is None and workload not in LEAN_ONLY else []),
                    *([("plain Celery", "default (prefork, 1 process per core)", []),
                       ("plain Celery", "tuned for I/O (-P threads -c 200)",
                        ["-P", "threads", "-c", "200"])]
                      if workload in PLAIN_TASK else []),
                ]  # fmt: skip
                for system, config, pool_args in runs:
                    if pool_args is None or pool_args in (["client"], ["async"]):
                        report = agentflow_row(workload, shape, url, args.workers,
                                               args.concurrency, args.duration,
                                               pool_args[0] if pool_args else "lean")  # fmt: skip
                    else:
                        report = plain_row(workload, shape, url, str(mock.url), pool_args,
                                           args.duration)  # fmt: skip
                    r = row(system, config, shape, report)
                    r["workload"] = workload
                    r["run_at"] = session
                    rows.append(r)
                    print(f"{workload} {system} [{config}] {shape.label()}: "
                          f"{report.one_line()}", flush=True)  # fmt: skip
    finally:
        mock.stop()
        redis.Redis.from_url(url).flushdb()
        if stop_redis is not None:
            stop_redis()
    if not args.no_write:
        ran = set(args.workloads.split(","))
        kept = [
            r
            for r in (json.loads(RAW.read_text()) if RAW.exists() else [])
            if r.get("workload") not in ran
        ]  # rows of workloads not run this time stay
        write_docs(sorted([*kept, *rows], key=lambda r: str(r["workload"])), args.duration)
        print(f"wrote {DOCS.relative_to(ROOT)} and {RAW.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
