"""`agentflow benchmark` / `loadtest`, and CPU profiles of the workers, end to end.

These run the real CLI against a local cluster on the suite's Redis. They check what the
reports contain (counts, shapes, files), never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.bench.stages import Stage, parse_stages
from tests.conftest import TEST_REDIS_URL, cli_env

pytestmark = pytest.mark.integration


def agentflow(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", *args, "--local", "--redis-url", TEST_REDIS_URL,
         "--concurrency", "20", "--warmup", "0s", "--no-progress"],
        env=cli_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_benchmark_reports_every_event_as_json_and_html(tmp_path: Path, redis_client) -> None:
    html = tmp_path / "report.html"
    proc = agentflow("benchmark", "--workload", "W0", "--requests", "300",
                     "--concurrent-users", "20", "--json", "--html", str(html))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["sent"] == report["completed"] == 300
    assert report["errors"] == 0 and report["error_rate"] == 0
    assert report["requests_per_second"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["worker_rss_mb_max"] > 0
    assert 0 < report["in_flight_max"] <= 20
    page = html.read_text()
    assert "<svg" in page and "latency" in page.lower()


def test_benchmark_runs_the_llm_workload_against_the_mock(redis_client) -> None:
    proc = agentflow("benchmark", "--workload", "W1", "--requests", "100",
                     "--concurrent-users", "20", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["completed"] == 100 and report["errors"] == 0
    assert report["latency_ms"]["p50"] >= 50  # every event made its 50 ms mock LLM call


@pytest.mark.parametrize("workload", ["W2http", "W2httpx"])
def test_benchmark_runs_the_fan_out_with_http_tools(workload: str, redis_client) -> None:
    """Each event's three tools GET the mock server's /tool (a failed call fails the event:
    no errors means every call was answered), then the LLM call; worker CPU is reported."""
    proc = agentflow("benchmark", "--workload", workload, "--requests", "60",
                     "--concurrent-users", "20", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["completed"] == 60 and report["errors"] == 0
    assert report["settings"]["workload"] == workload
    assert report["settings"]["worker_cpu_us_per_event"] > 0


@pytest.mark.parametrize("driver", ["client", "async"])
def test_benchmark_drives_through_the_clients_and_reports_producer_cpu(driver: str,
                                                                      redis_client):  # fmt: skip
    proc = agentflow("benchmark", "--workload", "W0", "--duration", "3s", "--driver", driver,
                     "--concurrent-users", "10", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["completed"] > 0 and report["errors"] == 0
    assert report["settings"]["driver"] == driver
    assert report["settings"]["producer_cpu_us_per_event"] > 0


def test_loadtest_ramps_users_through_the_stages(redis_client) -> None:
    proc = agentflow("loadtest", "--stages", "1s:4,2s:4,1s:12,2s:12", "--agent", "noop", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    users = [s["users"] for s in report["samples"]]
    assert 4 in users and 12 in users and users.index(4) < users.index(12)
    assert report["errors"] == 0 and report["completed"] == report["sent"] > 0


def test_stage_presets_and_errors() -> None:
    assert parse_stages("30s:10,1m:100,30s:10") == [Stage(30.0, 10), Stage(60.0, 100),
                                                     Stage(30.0, 10)]  # fmt: skip
    assert parse_stages("spike")[1].users == 400
    with pytest.raises(ValueError):
        parse_stages("30s")


def test_cpu_profile_is_collected_in_collapsed_stack_format(tmp_path: Path, redis_client):
    out = tmp_path / "cpu.collapsed"
    proc = agentflow("benchmark", "--workload", "W0", "--duration", "3s",
                     "--concurrent-users", "10", "--profile", "cpu", "--output", str(out),
                     "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in out.read_text().splitlines() if line]
    assert lines
    stack, count = lines[0].rsplit(" ", 1)
    assert ";" in stack and int(count) > 0
    assert all(line.startswith("worker-") for line in lines)  # one root per worker process
    assert any("agentflow/_worker" in line for line in lines)  # the worker's own frames


def test_benchmark_runs_workers_with_hooks_and_traces(redis_client) -> None:
    """--with-hooks and --with-trace: what the report measures includes their cost."""
    proc = agentflow("benchmark", "--workload", "W0", "--requests", "50",
                     "--concurrent-users", "5", "--json", "--with-hooks",
                     "--with-trace")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["completed"] == 50 and report["name"].endswith("+hooks +trace")
    traces = [k for k in redis_client.scan_iter("agentflow-bench:trace:*", count=1000)
              if b":session:" not in k]  # fmt: skip
    assert len(traces) >= 50
    steps = [json.loads(s) for s in redis_client.lrange(traces[0], 0, -1)]
    assert {"before_event", "before_agent_run", "after_agent_run", "after_event"} <= {
        s.get("hook") for s in steps if s["kind"] == "hooks"}  # fmt: skip
