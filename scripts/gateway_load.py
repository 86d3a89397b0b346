"""Load on one `agentflow gateway` process: POST /v1/events per second, and 1,000 SSE streams.

Starts a private Redis (or uses --redis-url), one gateway process and, for the streams, one
worker; everything runs on this machine and is stopped at the end.

1. POST: `--posts` events for the built-in `noop` agent from `--concurrency` keep-alive
   connections (spread over `--procs` client processes); every answer must be 202. No worker
   runs meanwhile: the events wait in their queue, so the figure is the gateway's (and
   Redis's), not the workers'. Baseline: the same events through `AsyncClient.emit` with the
   same concurrency, in this process, against the same Redis.
2. SSE: `--streams` events for the `ticker` agent below (one worker runs them all at once);
   each streams `--tokens` tokens ``t0 ``, ``t1 ``, ... `--interval` apart after a
   `--delay`. One SSE stream per event, all open at once; every stream must deliver every
   token, in order, then its `result`.

    python scripts/gateway_load.py --posts 20000 --streams 1000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "gateway-load-key"
PREFIX = "agentflow-gwload"

# -- the agent the streams watch (workers import this module: [agents] modules) -------------
try:
    from agentflow import Event, State, agent

    @agent("ticker")
    async def ticker(event: Event, state: State) -> dict[str, int]:
        """Wait `data.delay` s, then stream `data.tokens` tokens `data.interval` s apart."""
        from agentflow._redis.connection import get_async_redis
        from agentflow.config import get_settings
        from agentflow.streams import AsyncStreamWriter

        writer = AsyncStreamWriter(get_async_redis(), event.id,
                                   prefix=get_settings().broker.key_prefix)  # fmt: skip
        await asyncio.sleep(float(event.data.get("delay", 0)))
        n = int(event.data.get("tokens", 20))
        for k in range(n):
            await writer.add(f"t{k} ")
            await asyncio.sleep(float(event.data.get("interval", 0.25)))
        await writer.close()
        return {"tokens": n}

except ImportError:  # pragma: no cover - imported without agentflow installed
    pass


# -- processes -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    """The Redis, gateway and worker this run starts; all stopped on exit."""

    def __init__(self, redis_url: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="agentflow-gwload-"))
        self.children: list[subprocess.Popen[bytes]] = []
        self.started_redis = redis_url is None
        self.gateway_pid = 0
        (self.tmp / "agentflow.toml").write_text("")
        base = {"AGENTFLOW_CONFIG": str(self.tmp / "agentflow.toml"),
                "AGENTFLOW_BROKER__EMBEDDED_DIR": str(self.tmp / "redis")}  # fmt: skip
        if redis_url is None:
            out = subprocess.run([sys.executable, "-m", "agentflow.cli", "redis", "start"],
                                 env={**os.environ, **base}, check=True, capture_output=True,
                                 text=True)  # fmt: skip
            redis_url = out.stdout.strip()
        from agentflow.gateway.auth import hash_key

        self.env = {
            **base,
            "AGENTFLOW_BROKER__URL": redis_url,
            "AGENTFLOW_BROKER__KEY_PREFIX": PREFIX,
            "AGENTFLOW_MONITORING__ENABLE_METRICS": "false",
            "AGENTFLOW_RUNNER__MAX_CONCURRENT_EVENTS": "10000000",
            "AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE": "10000000",
            "AGENTFLOW_RUNNER__EVENT_TIMEOUT": "300s",
            "AGENTFLOW_AGENTS__MODULES": '["gateway_load"]',
            "AGENTFLOW_GATEWAY__KEYS": json.dumps([{"hash": hash_key(KEY), "rate": 1e9}]),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]),
        }
        os.environ.update(self.env)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(args, env={**os.environ, **self.env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.children.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def gateway(self) -> str:
        port = _free_port()
        self.gateway_pid = self.spawn("gateway", [sys.executable, "-m", "agentflow.cli", "gateway",
                               "--port", str(port)]).pid  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            time.sleep(0.1)
        raise SystemExit("gateway did not start:\n" + self.log("gateway"))

    def worker(self, concurrency: int) -> None:
        from agentflow._redis.queues import agent_queue

        self.spawn("worker", [sys.executable, "-m", "celery", "-A", "agentflow", "worker",
                              "-Q", agent_queue("ticker"), "-c", str(concurrency), "-l", "INFO",
                              "--without-mingle", "--without-gossip"])  # fmt: skip
        for _ in range(600):
            if " ready." in self.log("worker"):
                return
            time.sleep(0.1)
        raise SystemExit("worker did not start:\n" + self.log("worker"))

    def stop(self) -> None:
        for proc in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.started_redis:
            subprocess.run([sys.executable, "-m", "agentflow.cli", "redis", "stop"],
                           env={**os.environ, **self.env}, capture_output=True)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(url: str) -> float:
    """CPU seconds the Redis server has used."""
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- 1. POST /v1/events ----------------------------------------------------------------------
async def _post_many(url: str, n: int, concurrency: int, start_at: float) -> dict[str, Any]:
    import aiohttp

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    counter = iter(range(n))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_connection() -> None:
            for k in counter:
                body = json.dumps({"type": "bench.gateway", "agent": "noop", "data": {"i": k}})
                t0 = time.perf_counter()
                async with session.post(url + "/v1/events", data=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        ended = time.time()
    return {"statuses": statuses, "began": began, "ended": ended, "latencies": latencies}


def _post_proc(url: str, n: int, concurrency: int, start_at: float) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_post_many(url, n, concurrency, start_at))


def measure_posts(url: str, n: int, concurrency: int, procs: int, gateway_pid: int,
                  redis_url: str) -> dict[str, Any]:  # fmt: skip
    """POST n events from `procs` processes; rate over the whole window, and the CPU time
    the gateway and Redis spent per request (what contention on a shared machine does not
    change)."""
    _post_proc(url, min(2000, n), min(concurrency, 32), 0)  # warm-up
    start_at = time.time() + 2.0
    cpu0, rcpu0 = cpu_seconds(gateway_pid), redis_cpu(redis_url)
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(_post_proc, [url] * procs, per,
                              [max(1, concurrency // procs)] * procs, [start_at] * procs))  # fmt: skip
    cpu, rcpu = cpu_seconds(gateway_pid) - cpu0, redis_cpu(redis_url) - rcpu0
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    for part in parts:
        for status, count in part["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
        latencies += part["latencies"]
    window = max(p["ended"] for p in parts) - min(p["began"] for p in parts)
    latencies.sort()
    return {"requests": n, "statuses": statuses, "seconds": round(window, 3),
            "per_second": round(n / window), "errors": n - statuses.get("202", 0),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
            "gateway_cpu_us_per_request": round(1e6 * cpu / n),
            "gateway_cpu_busy": round(cpu / window, 2),
            "redis_cpu_us_per_request": round(1e6 * rcpu / n)}  # fmt: skip


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"type": "bench.gateway", "agent": "noop", "data": {"i": 1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def measure_posts_wrk(url: str, seconds: float, concurrency: int, gateway_pid: int,
                      redis_url: str) -> dict[str, Any]:  # fmt: skip
    """The same POSTs from `wrk` (one thread, C): a driver that takes little of the CPU the
    gateway needs. Any non-2xx answer counts as an error."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(_WRK_SCRIPT % KEY)
    cmd = ["wrk", "-t", "1", "-c", str(concurrency), "-d", "3s", "--timeout", "30s",
           "-s", str(script), url + "/v1/events"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up
    cpu0, rcpu0 = cpu_seconds(gateway_pid), redis_cpu(redis_url)
    cmd[6] = f"{seconds:g}s"
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu, rcpu = cpu_seconds(gateway_pid) - cpu0, redis_cpu(redis_url) - rcpu0
    fields = [int(x) for x in out.split("WRK ")[1].split()]
    n, micros, status_errors = fields[0], fields[1], fields[2]
    window = micros / 1e6
    return {"driver": "wrk -t1", "requests": n, "seconds": round(window, 3),
            "per_second": round(n / window), "errors": status_errors + sum(fields[3:7]),
            "error_kinds": dict(zip(["status", "connect", "read", "write", "timeout"],
                                    fields[2:7], strict=True)),
            "p50_ms": round(fields[7] / 1000, 2), "p99_ms": round(fields[8] / 1000, 2),
            "gateway_cpu_us_per_request": round(1e6 * cpu / n),
            "gateway_cpu_busy": round(cpu / window, 2),
            "redis_cpu_us_per_request": round(1e6 * rcpu / n)}  # fmt: skip


async def measure_baseline(n: int, concurrency: int, redis_url: str) -> dict[str, Any]:
    """The same events through AsyncClient.emit, same concurrency, this process."""
    from agentflow.client import AsyncClient

    async with AsyncClient() as client:
        counter = iter(range(n))

        async def one() -> None:
            for k in counter:
                await client.emit({"type": "bench.gateway", "agent": "noop", "data": {"i": k}})

        await asyncio.gather(*(client.emit({"type": "warm", "agent": "noop"})
                               for _ in range(200)))  # fmt: skip
        began, cpu0, rcpu0 = time.perf_counter(), time.process_time(), redis_cpu(redis_url)
        await asyncio.gather(*(one() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
        cpu, rcpu = time.process_time() - cpu0, redis_cpu(redis_url) - rcpu0
    return {"events": n, "seconds": round(seconds, 3), "per_second": round(n / seconds),
            "client_cpu_us_per_event": round(1e6 * cpu / n),
            "redis_cpu_us_per_event": round(1e6 * rcpu / n)}  # fmt: skip


# -- 2. SSE streams --------------------------------------------------------------------------
async def measure_streams(url: str, n: int, tokens: int, delay: float, interval: float,
                          gateway_pid: int) -> dict[str, Any]:  # fmt: skip
    """n events, n SSE streams open at once; every token in order, then the result."""
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}"}
    expected = [f"t{k} " for k in range(tokens)]
    open_now = peak = 0
    failures: list[str] = []
    delivered = 0
    gauge_peak = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        data = {"tokens": tokens, "delay": delay, "interval": interval}
        body = json.dumps({"type": "bench.stream", "agent": "ticker", "data": data})
        ids: list[str] = []
        for _ in range(n):
            async with session.post(url + "/v1/events", data=body,
                                    headers={**headers, "Content-Type": "application/json"}
                                    ) as r:  # fmt: skip
                ids.append((await r.json())["id"])
        posted, cpu0 = time.perf_counter(), cpu_seconds(gateway_pid)

        async def watch(event_id: str) -> None:
            nonlocal open_now, peak, delivered
            got: list[str] = []
            final = None
            kind = ""
            async with session.get(f"{url}/v1/events/{event_id}/stream", headers=headers) as r:
                if r.status != 200:
                    failures.append(f"{event_id}: HTTP {r.status}")
                    return
                open_now += 1
                peak = max(peak, open_now)
                try:
                    async for raw in r.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            if kind == "token":
                                got.append(json.loads(line[6:]))
                            else:
                                final = kind
                                break
                finally:
                    open_now -= 1
            delivered += len(got)
            if got != expected or final != "result":
                failures.append(f"{event_id}: {len(got)} tokens, in order: "
                                f"{got == expected[: len(got)]}, ended with {final}")  # fmt: skip

        async def sample() -> None:
            nonlocal gauge_peak
            while True:
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    async with session.get(url + "/metrics", headers=headers) as r:
                        m = re.search(r"^agentflow_gateway_open_streams (\S+)$", await r.text(),
                                      re.M)  # fmt: skip
                        if m:
                            gauge_peak = max(gauge_peak, int(float(m.group(1))))

        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(watch(i) for i in ids))
        sampler.cancel()
        seconds = time.perf_counter() - posted
        cpu = cpu_seconds(gateway_pid) - cpu0
    return {"streams": n, "tokens_per_stream": tokens, "peak_open_client": peak,
            "peak_open_gateway": gauge_peak, "tokens_delivered": delivered,
            "tokens_expected": n * tokens, "failed_streams": len(failures),
            "failures": failures[:5], "seconds": round(seconds, 2),
            "gateway_cpu_seconds": round(cpu, 2),
            "gateway_cpu_us_per_token": round(1e6 * cpu / max(1, delivered))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--procs", type=int, default=1, help="Client processes for POSTs.")
    parser.add_argument(
        "--driver",
        choices=["aiohttp", "wrk"],
        default="aiohttp",
        help="POST load from aiohttp processes, or from wrk (apt: wrk).",
    )
    parser.add_argument("--wrk-seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--redis-url")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    procs = Procs(args.redis_url)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        url = procs.gateway()
        if args.posts:
            redis_url = procs.env["AGENTFLOW_BROKER__URL"]
            if args.driver == "wrk":
                out["post"] = measure_posts_wrk(url, args.wrk_seconds, args.concurrency,
                                                procs.gateway_pid, redis_url)  # fmt: skip
            else:
                out["post"] = measure_posts(url, args.posts, args.concurrency, args.procs,
                                            procs.gateway_pid, redis_url)  # fmt: skip
            print("POST /v1/events:", json.dumps(out["post"]), flush=True)
            out["baseline_async_client"] = asyncio.run(
                measure_baseline(args.posts, args.concurrency, redis_url)
            )
            print("AsyncClient.emit:", json.dumps(out["baseline_async_client"]), flush=True)
        if args.streams:
            procs.worker(args.streams + 50)
            out["sse"] = asyncio.run(measure_streams(url, args.streams, args.tokens,
                                                     args.delay, args.interval,
                                                     procs.gateway_pid))  # fmt: skip
            print("SSE:", json.dumps(out["sse"]), flush=True)
    finally:
        procs.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ok = out.get("post", {}).get("errors", 0) == 0 and out.get("sse", {}).get(
        "failed_streams", 0) == 0  # fmt: skip
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
