"""One benchmark or load-test run, as the CLI commands and the submitter script start it."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentflow.bench.client_users import run_async_users, run_client_users
from agentflow.bench.driver import LoadDriver, Progress, WorkerWatch
from agentflow.bench.local import LocalOptions, client_for_env, local_cluster
from agentflow.bench.profiles import CpuProfileCollector, py_spy
from agentflow.bench.stats import BenchReport
from agentflow.bench.workloads import Workload
from agentflow.client import Client
from agentflow.errors import AgentFlowError


@dataclass
class RunOptions:
    """What to run and how to measure it."""

    workload: Workload
    users: Callable[[float], int]
    name: str = "benchmark"
    duration: float | None = None
    requests: int | None = None
    warmup: float = 1.0
    local: LocalOptions | None = None
    profile: Literal["cpu"] | None = None
    profile_output: Path | None = None
    drain_timeout: float = 30.0
    max_users: int = 0
    """Largest user count of the shape (sizes the local cluster's in-flight bound)."""
    rate: float | None = None
    """Open loop: events per second (users then caps the events in flight)."""
    warmup_users: int | None = None
    """Users during the warm-up (default: the shape's user count at t=0, at least 1)."""
    extra: dict[str, Any] = field(default_factory=dict)
    driver: Literal["lean", "client", "async"] = "lean"
    """``lean``: batched emits, one subscription for every result (the load generator's
    own cost kept small); ``client``: one thread per user calling ``Client.emit`` and
    ``handle.result()``, as an application does (closed loop only)."""


@contextlib.contextmanager
def _cluster(opts: RunOptions) -> Iterator[tuple[Client, WorkerWatch]]:
    if opts.local is None:
        client = client_for_env({})
        try:
            yield client, WorkerWatch()
        finally:
            client.close()
        return
    local = opts.local
    local.max_in_flight = max(local.max_in_flight, opts.max_users * 2)
    if opts.workload.modules:  # the workload's agent or tools live outside the built-ins
        key = "AGENTFLOW_AGENTS__MODULES"
        modules = list(json.loads(local.env.get(key, "[]")))  # --with-hooks sets some too
        modules += [m for m in opts.workload.modules if m not in modules]
        local.env[key] = json.dumps(modules)
    with local_cluster(local) as (cluster, client):
        yield client, WorkerWatch(cluster.worker_pids())


def run(opts: RunOptions, on_progress: Callable[[Progress], None] | None = None) -> BenchReport:
    """Bring up (or connect to) the cluster, warm up, drive the load, collect profiles."""
    why = opts.workload.available()
    if why:
        raise AgentFlowError(why)
    if opts.driver != "lean" and (opts.rate is not None or opts.duration is None):
        raise AgentFlowError(f"--driver {opts.driver} runs a closed loop for a --duration")
    if opts.profile:
        if opts.local is None:
            raise AgentFlowError(
                "--profile profiles the workers of a --local cluster; for other workers run "
                "py-spy on their host (docs/performance.md)"
            )
        py_spy()  # missing: say so before the cluster starts
    with _cluster(opts) as (client, workers), contextlib.ExitStack() as stack:
        make = opts.workload.events()
        if opts.warmup > 0:
            level = opts.warmup_users or max(1, opts.users(0.0))
            LoadDriver(client, make, lambda t: level, name="warmup", duration=opts.warmup,
                       workers=workers, drain_timeout=10, rate=opts.rate).run()  # fmt: skip
        collector = None
        if opts.profile:
            seconds = opts.duration if opts.duration is not None else 30.0
            collector = CpuProfileCollector(workers.pids, seconds)
            stack.callback(collector.close)  # py-spy stopped however the run ends
            collector.start()
        started = time.time()
        cpu_started = time.process_time()
        workers_cpu_started = workers.cpu_seconds()
        if opts.driver != "lean":
            assert opts.duration is not None
            users = run_client_users if opts.driver == "client" else run_async_users
            report = users(client, make, max(1, opts.users(0.0)), opts.duration,
                           name=opts.name, workers=workers)  # fmt: skip
        else:
            report = LoadDriver(
                client, make, opts.users, name=opts.name, duration=opts.duration,
                requests=opts.requests, drain_timeout=opts.drain_timeout, workers=workers,
                on_progress=on_progress, rate=opts.rate,
            ).run()  # fmt: skip
        producer_cpu = time.process_time() - cpu_started
        workers_cpu = workers.cpu_seconds() - workers_cpu_started
        report.settings.update(
            {"workload": opts.workload.name, "agent": opts.workload.agent, "started": started,
             "producer_cpu_us_per_event": round(producer_cpu * 1e6 / max(1, report.sent)),
             "worker_cpu_us_per_event": round(workers_cpu * 1e6 / max(1, report.completed)),
             "rate": opts.rate, "driver": opts.driver,
             "warmup_s": opts.warmup, "local": opts.local is not None, **opts.extra}
        )  # fmt: skip
        if opts.local is not None:
            report.settings.update({"workers": opts.local.workers, "pool": opts.local.pool,
                                    "concurrency": opts.local.concurrency})  # fmt: skip
        if collector is not None:
            output = opts.profile_output or Path("agentflow-cpu.collapsed")
            report.settings["profile"] = collector.finish(output)
            report.settings["profile_output"] = str(output)
    return report
