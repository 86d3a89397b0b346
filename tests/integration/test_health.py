"""`agentflow health`: probes that answer from the worker's own loops, not through a task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_PREFIX, cli_env

pytestmark = pytest.mark.integration


def _health(beat: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "health", "--file", str(beat), *args],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip


def test_a_busy_worker_is_alive_and_ready(start_worker, client, redis_client, tmp_path):
    beat = tmp_path / "worker.health"
    start_worker(concurrency=1, env={"AGENTFLOW_MONITORING__HEALTH_FILE": str(beat)})
    busy = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 30}})
    deadline = time.monotonic() + 30
    while not redis_client.llen(f"{TEST_PREFIX}:test:started:{busy.id}"):
        assert time.monotonic() < deadline, "the event never started"
        time.sleep(0.05)
    time.sleep(3)  # its only slot busy for a while
    alive = _health(beat, "--liveness", "--max-age", "3s")
    ready = _health(beat, "--readiness", "--max-age", "3s")
    assert alive.returncode == 0, alive.stderr
    assert ready.returncode == 0, ready.stderr
    assert client.state(busy.id) == "PENDING"  # still running
    busy.cancel()


def test_a_wedged_worker_fails_liveness_within_max_age(start_worker, tmp_path):
    beat = tmp_path / "worker.health"
    worker = start_worker(env={"AGENTFLOW_MONITORING__HEALTH_FILE": str(beat)})
    assert _health(beat, "--liveness", "--max-age", "3s").returncode == 0
    os.kill(worker.proc.pid, signal.SIGSTOP)  # every thread of it stops turning
    try:
        time.sleep(4.5)
        wedged = _health(beat, "--liveness", "--max-age", "3s")
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    assert wedged.returncode == 1
    assert "has not turned" in wedged.stderr
    time.sleep(2)
    assert _health(beat, "--liveness", "--max-age", "3s").returncode == 0  # back


def test_no_worker_means_not_alive(tmp_path):
    missing = _health(tmp_path / "none.health", "--liveness")
    assert missing.returncode == 1 and "no beat file" in missing.stderr


def test_a_stopped_worker_removes_its_beat(start_worker, tmp_path):
    beat = tmp_path / "worker.health"
    worker = start_worker(env={"AGENTFLOW_MONITORING__HEALTH_FILE": str(beat)})
    assert beat.exists()
    worker.stop()
    assert not beat.exists()
    assert _health(beat, "--readiness").returncode == 1
