"""Redis failover on loopback: one primary, one replica and three sentinels, with AgentFlow's
workers and a producer pointed at them through a ``sentinel://`` URL, as a user would.

The servers are private ``redis-server`` processes on free loopback ports in a folder of the
run's own; Redis and the sentinels have passwords, so the URL's and ``[broker]
sentinel_password`` are both exercised. Workers run ``celery -A agentflow worker`` with
``AGENTFLOW_BROKER__URL`` and ``AGENTFLOW_BROKER__SENTINEL_MASTER``; the producer (this
script's ``produce`` command) emits ``stint`` events (scripts/netns_agents.py: each records its
runs and adds 1 to its own session's total) at a steady rate with a ``Client``, retrying an
emit that failed on a connection error under the same event id.

:func:`failover_under_load` SIGKILLs the primary in the middle of the load and counts what
arrived: results, runs per event, each session's applied deltas, and how long after the kill
events started again on the promoted replica.

Commands::

    python scripts/sentinel_cluster.py failover [--events 3000] [--rate 300] [--wait-replicas 1]
        # kill the primary mid-load: sent, completed, lost, duplicated, time to recover
    python scripts/sentinel_cluster.py produce ...   # the producer (run by the harness)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as workers load it
from stint_records import read_runs, read_totals

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
MASTER = "afmaster"
PASSWORD = "af-redis-secret"
SENTINEL_PASSWORD = "af-sentinel-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server() -> str:
    from agentflow._redis.embedded import redis_server_binary

    return redis_server_binary()


@dataclass
class SentinelCluster:
    """A primary, a replica and three sentinels on loopback, and AgentFlow processes on them."""

    dir: Path
    key_prefix: str = "afsentinel"
    down_after_ms: int = 1000
    concurrency: int = 20
    visibility: str = "10s"
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("primary", "replica", "s1", "s2", "s3"):
            self.ports[name] = _free_port()
        (self.dir / "agentflow.toml").write_text("")

    def __enter__(self) -> SentinelCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- servers ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The broker URL every AgentFlow process gets."""
        s = [self.ports[n] for n in ("s1", "s2", "s3")]
        return (f"sentinel://:{PASSWORD}@127.0.0.1:{s[0]}/0;sentinel://127.0.0.1:{s[1]};"
                f"sentinel://127.0.0.1:{s[2]}")  # fmt: skip

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=str(cwd or self.dir), start_new_session=True)  # fmt: skip
        finally:
            log.close()
        self._procs[name] = proc
        return proc

    def _start_redis(self, name: str, *extra: str) -> None:
        folder = self.dir / name
        folder.mkdir(exist_ok=True)
        self._spawn(name, [_redis_server(), "--port", str(self.ports[name]),
                           "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                           "--appendonly", "yes", "--maxmemory-policy", "noeviction",
                           "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                           "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                           *extra])  # fmt: skip

    def _start_sentinel(self, name: str) -> None:
        conf = self.dir / f"{name}.conf"
        conf.write_text("\n".join([
            f"port {self.ports[name]}", "bind 127.0.0.1", f"dir {self.dir}",
            f"requirepass {SENTINEL_PASSWORD}",
            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['primary']} 2",
            f"sentinel auth-pass {MASTER} {PASSWORD}",
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER} 10000",
            f"sentinel parallel-syncs {MASTER} 1", "",
        ]))  # fmt: skip
        self._spawn(name, [_redis_server(), str(conf), "--sentinel"])

    def start(self) -> None:
        """Start the servers; return once the replica is in sync and every sentinel sees the
        replica and the two other sentinels."""
        self._start_redis("primary")
        self._start_redis("replica", "--replicaof", "127.0.0.1", str(self.ports["primary"]))
        for name in ("s1", "s2", "s3"):
            self._start_sentinel(name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                info = self.server("replica").info("replication")
                views = [self.sentinel(n).sentinel_master(MASTER) for n in ("s1", "s2", "s3")]
                if info.get("master_link_status") == "up" and all(
                    int(v.get("num-slaves", 0)) >= 1 and int(v.get("num-other-sentinels", 0)) >= 2
                    for v in views
                ):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"sentinel cluster not ready; logs in {self.dir}")

    def stop(self) -> None:
        """Stop every process: workers and producer first (a warm shutdown needs Redis),
        then the servers."""
        servers = {"primary", "replica", "s1", "s2", "s3"}
        for group in ([n for n in self._procs if n not in servers],
                      [n for n in self._procs if n in servers]):  # fmt: skip
            for name in group:
                if self._procs[name].poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._procs[name].pid, signal.SIGTERM)
            for name in group:
                try:
                    self._procs[name].wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._procs[name].pid, signal.SIGKILL)
                    self._procs[name].wait(5)

    def server(self, name: str) -> redis.Redis:
        """A client on the primary or replica process named `name`."""
        return redis.Redis(port=self.ports[name], password=PASSWORD, socket_timeout=2)

    def sentinel(self, name: str) -> redis.Redis:
        """A client on one sentinel."""
        return redis.Redis(port=self.ports[name], password=SENTINEL_PASSWORD, socket_timeout=2)

    def master_port(self) -> int | None:
        """The master's port as a majority of the sentinels names it (None before one does)."""
        seen: dict[int, int] = {}
        for name in ("s1", "s2", "s3"):
            with contextlib.suppress(redis.RedisError, OSError):
                addr = self.sentinel(name).sentinel_get_master_addr_by_name(MASTER)
                if addr:
                    seen[int(addr[1])] = seen.get(int(addr[1]), 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def master(self) -> redis.Redis:
        """A client on the current master."""
        port = self.master_port()
        if port is None:
            raise RuntimeError("the sentinels name no master")
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=5)

    def kill(self, name: str) -> float:
        """SIGKILL the Redis process `name`; the time it died."""
        self._procs[name].kill()
        self._procs[name].wait(10)
        return time.time()

    # -- AgentFlow processes ------------------------------------------------------------------
    def agentflow_env(self, name: str) -> dict[str, str]:
        """The variables a user sets for a process on this Redis."""
        env = {
            **os.environ,
            "AGENTFLOW_CONFIG": str(self.dir / "agentflow.toml"),
            "AGENTFLOW_BROKER__URL": self.url,
            "AGENTFLOW_BROKER__SENTINEL_MASTER": MASTER,
            "AGENTFLOW_BROKER__SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            "AGENTFLOW_BROKER__KEY_PREFIX": self.key_prefix,
            "AGENTFLOW_BROKER__EMBEDDED": "false",
            "AGENTFLOW_MONITORING__ENABLE_METRICS": "false",
            "AGENTFLOW_MONITORING__HEALTH_FILE": str(self.dir / f"{name}.health"),
            "AGENTFLOW_AGENTS__MODULES": '["netns_agents", "tests.agents"]',
            "AGENTFLOW_RUNNER__MAX_CONCURRENT_EVENTS": "1000000",
            "AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE": "1000000",
            "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": self.visibility,
            "PYTHONPATH": os.pathsep.join([str(SCRIPTS), str(ROOT)]),
            "AGENTFLOW_NETNS_HOST": name,
        }
        env.update(self.env)
        return env

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """``celery -A agentflow worker`` (log ``<name>.log``); returns once it is ready."""
        celery = str(Path(sys.executable).parent / "celery")
        proc = self._spawn(name, [celery, "-A", "agentflow", "worker", "-n", f"{name}@sentinel",
                                  "-c", str(self.concurrency), "-l", "INFO",
                                  "--without-mingle", "--without-gossip"],
                           env=self.agentflow_env(name))  # fmt: skip
        deadline = time.monotonic() + 90
        while " ready." not in self.log(name):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)
        return proc

    def produce(self, *args: str) -> subprocess.Popen[bytes]:
        """Run this script's ``produce`` command (returns at once; log ``producer.log``)."""
        return self._spawn("producer", [sys.executable, str(Path(__file__).resolve()),
                                        "produce", *args],
                           env=self.agentflow_env("producer"))  # fmt: skip

    def log(self, name: str) -> str:
        """A process's log so far."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- counting -----------------------------------------------------------------------------
    def runs(self, event_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
        """Each event's recorded runs on the current master: (worker, unix time)."""
        return read_runs(self.master(), self.key_prefix, event_ids)

    def totals(self, sessions: list[str]) -> dict[str, int]:
        """Each session's ``total`` (how many times its events' deltas were applied)."""
        return read_totals(self.master(), self.key_prefix, sessions)


# -- the producer ------------------------------------------------------------------------------


def _produce(args: argparse.Namespace) -> int:
    """Emit `--events` stint events at `--rate`/s (retrying an emit that failed on a
    connection error under the same ids), then wait for every result; write a report."""
    from agentflow import Client
    from agentflow.models import Event

    client = Client()
    report: dict[str, Any] = {"sent": 0, "completed": 0, "errors": {}, "hosts": {}, "ids": [],
                              "emit_retries": 0, "emit_stalls": []}  # fmt: skip
    out = Path(args.out)
    started = time.time()
    batch = max(1, int(args.rate / 20))
    handles = []
    try:
        for first in range(0, args.events, batch):
            events = [Event(type="sentinel", agent="stint", session_id=f"{args.run}-{n}",
                            data={"seconds": args.seconds})
                      for n in range(first, min(args.events, first + batch))]  # fmt: skip
            tried = time.monotonic()
            while True:
                try:
                    handles += client.emit_many(events)
                    break
                except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError,
                        OSError) as exc:  # fmt: skip
                    report["emit_retries"] += 1
                    if time.monotonic() - tried > 60:
                        raise RuntimeError("emit failed for 60 s") from exc
                    time.sleep(0.1)
            stalled = time.monotonic() - tried
            if stalled > 0.5:
                report["emit_stalls"].append(round(stalled, 2))
            report["sent"] = len(handles)
            report["ids"] = [h.id for h in handles]
            time.sleep(max(0.0, started + (first + batch) / args.rate - time.time()))
        report["emitted_in"] = time.time() - started
        out.write_text(json.dumps(report))
        deadline = time.monotonic() + args.timeout
        for h in handles:
            try:
                result = h.result(timeout=max(0.01, deadline - time.monotonic()))
            except Exception as exc:
                report["errors"][h.id] = f"{type(exc).__name__}: {exc}"
                continue
            report["completed"] += 1
            host = result.output.get("host") if isinstance(result.output, dict) else None
            report["hosts"][str(host)] = report["hosts"].get(str(host), 0) + 1
        report["elapsed"] = time.time() - started
    finally:
        client.close()
    out.write_text(json.dumps(report))
    return 0


# -- the failover run --------------------------------------------------------------------------


@dataclass
class Failover:
    """What a failover under load did."""

    sent: int
    completed: int
    lost: int
    duplicated: int
    reruns: int
    emit_retries: int
    longest_emit_stall: float
    promoted_after: float
    rejoined_after: float | None
    recovered_after: float
    errors: dict[str, str]
    wait_replicas: int

    def line(self) -> str:
        """One line for a report."""
        return (f"wait_replicas={self.wait_replicas} sent={self.sent} "
                f"completed={self.completed} lost={self.lost} duplicated={self.duplicated} "
                f"re-run={self.reruns} emit-retries={self.emit_retries} "
                f"longest-emit-stall={self.longest_emit_stall:.1f}s "
                f"promoted-after={self.promoted_after:.1f}s "
                f"old-primary-replica-again-after={self.rejoined_after or 0:.1f}s "
                f"events-again-after={self.recovered_after:.1f}s")  # fmt: skip


def failover_under_load(cluster: SentinelCluster, events: int = 3000, rate: float = 300.0,
                        kill_after: float = 4.0, seconds: float = 0.2, workers: int = 2,
                        timeout: float = 240.0, rejoin: bool = True) -> Failover:  # fmt: skip
    """SIGKILL the primary `kill_after` seconds into a steady load; with `rejoin`, start it
    again once a replica is promoted (it comes back as a replica); count the outcome."""
    for i in range(workers):
        cluster.start_worker(f"w{i + 1}")
    old = cluster.master_port()
    report_path = cluster.dir / "producer.json"
    run = f"fo{int(time.time())}"
    proc = cluster.produce("--events", str(events), "--rate", str(rate), "--run", run,
                           "--seconds", str(seconds), "--out", str(report_path),
                           "--timeout", str(timeout))  # fmt: skip
    time.sleep(kill_after)
    if proc.poll() is not None:
        raise RuntimeError(f"producer ended early:\n{cluster.log('producer')[-3000:]}")
    killed_at = cluster.kill("primary")
    promoted_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        port = cluster.master_port()
        if port is not None and port != old:
            promoted_at = time.time()
            break
        time.sleep(0.05)
    if promoted_at is None:
        raise RuntimeError("no replica was promoted within 60 s")
    rejoined_at = None
    if rejoin:  # the operator restarts the dead node: the sentinels make it a replica
        cluster._start_redis("primary")
        deadline = time.monotonic() + 60
        while rejoined_at is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                info = cluster.server("primary").info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    rejoined_at = time.time()
            time.sleep(0.1)
    try:
        proc.wait(timeout + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    report = json.loads(report_path.read_text())
    ids: list[str] = report["ids"]
    runs = cluster.runs(ids)
    totals = cluster.totals([f"{run}-{n}" for n in range(len(ids))])
    unapplied = {ids[n] for n in range(len(ids)) if totals[f"{run}-{n}"] == 0}
    starts_after = [t for r in runs.values() for _, t in r if t > killed_at]
    return Failover(
        sent=report["sent"], completed=report["completed"],
        lost=len(unapplied | set(report["errors"])),
        duplicated=sum(1 for t in totals.values() if t > 1),
        reruns=sum(max(0, len(r) - 1) for r in runs.values()),
        emit_retries=report["emit_retries"],
        longest_emit_stall=max(report["emit_stalls"], default=0.0),
        promoted_after=promoted_at - killed_at,
        rejoined_after=(rejoined_at - killed_at) if rejoined_at else None,
        recovered_after=(min(starts_after) - killed_at) if starts_after else float("inf"),
        errors=report["errors"],
        wait_replicas=int(cluster.env.get("AGENTFLOW_BROKER__WAIT_REPLICAS", "0")),
    )  # fmt: skip


def steady_load(cluster: SentinelCluster, events: int, rate: float, seconds: float = 0.0,
                workers: int = 2) -> dict[str, Any]:  # fmt: skip
    """The same producer with no fault: its report, plus the master's CPU per event."""
    for i in range(workers):
        if f"w{i + 1}" not in cluster._procs:
            cluster.start_worker(f"w{i + 1}")
    master = cluster.master()
    cpu = master.info("cpu")
    before = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    report_path = cluster.dir / "steady.json"
    proc = cluster.produce("--events", str(events), "--rate", str(rate), "--run",
                           f"st{int(time.time())}", "--seconds", str(seconds),
                           "--out", str(report_path), "--timeout", "120")  # fmt: skip
    proc.wait(400)
    report: dict[str, Any] = json.loads(report_path.read_text())
    cpu = master.info("cpu")
    after = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    report["redis_cpu_us_per_event"] = (after - before) / max(1, report["sent"]) * 1e6
    return report


def main(argv: list[str] | None = None) -> int:
    """The command line: failover (and produce, which the harness runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fo = sub.add_parser("failover")
    fo.add_argument("--events", type=int, default=3000)
    fo.add_argument("--rate", type=float, default=300.0)
    fo.add_argument("--kill-after", type=float, default=4.0)
    fo.add_argument("--workers", type=int, default=2)
    fo.add_argument("--wait-replicas", type=int, default=0)
    fo.add_argument("--seconds", type=float, default=0.2)
    st = sub.add_parser("steady", help="no fault: emit rate, results/s, Redis CPU per event")
    st.add_argument("--events", type=int, default=5000)
    st.add_argument("--rate", type=float, default=100000.0)
    st.add_argument("--workers", type=int, default=2)
    st.add_argument("--wait-replicas", type=int, default=0)
    st.add_argument("--seconds", type=float, default=0.0)
    pr = sub.add_parser("produce")
    pr.add_argument("--events", type=int, required=True)
    pr.add_argument("--rate", type=float, required=True)
    pr.add_argument("--run", required=True)
    pr.add_argument("--seconds", type=float, default=0.2)
    pr.add_argument("--out", required=True)
    pr.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    if args.cmd == "produce":
        return _produce(args)
    with tempfile.TemporaryDirectory(prefix="af-sentinel-") as tmp:
        cluster = SentinelCluster(Path(tmp), env={
            "AGENTFLOW_BROKER__WAIT_REPLICAS": str(args.wait_replicas)})  # fmt: skip
        if args.cmd == "steady":
            with cluster:
                rep = steady_load(cluster, args.events, args.rate, args.seconds, args.workers)
            emit_s = rep["emitted_in"]
            print(f"wait_replicas={args.wait_replicas} sent={rep['sent']} "
                  f"completed={rep['completed']} emit={rep['sent'] / emit_s:.0f}/s "
                  f"end-to-end={rep['completed'] / rep['elapsed']:.0f}/s "
                  f"redis-cpu={rep['redis_cpu_us_per_event']:.0f}us/event")  # fmt: skip
            return 0
        with cluster:
            result = failover_under_load(cluster, events=args.events, rate=args.rate,
                                         kill_after=args.kill_after, seconds=args.seconds,
                                         workers=args.workers)  # fmt: skip
        print(result.line())
        for event_id, why in list(result.errors.items())[:10]:
            print(f"  {event_id}: {why}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "sentinel_cluster"
    sys.exit(main())
