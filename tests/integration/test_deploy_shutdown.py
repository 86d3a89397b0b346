"""The image's init and compose's worker command, run as shipped: SIGTERM to PID 1 (what
`docker stop` and Kubernetes send) reaches Celery, whose warm shutdown runs every event the
worker holds (the running one and a prefetched one) to the end within the grace period; the
healthcheck passes while it serves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentflow.durations import parse_duration
from tests.conftest import TEST_ENV, TEST_PREFIX
from tests.unit.test_deploy import COMPOSE, exec_form

pytestmark = pytest.mark.integration


def test_sigterm_to_the_init_runs_a_warm_shutdown(client, redis_client, tmp_path: Path) -> None:
    entrypoint = exec_form("ENTRYPOINT")
    if shutil.which(entrypoint[0]) is None:
        pytest.skip(f"{entrypoint[0]} is not installed here (apt-get install tini)")
    service = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["worker-echo"]
    command = list(service["command"])
    command[command.index("-Q") + 1] = "agentflow.agent.slow_async"  # a test agent's queue
    beat = tmp_path / "worker.health"
    env = {**os.environ, **TEST_ENV, "AGENTFLOW_MONITORING__HEALTH_FILE": str(beat),
           "AGENTFLOW_RUNNER__WORKER_POOL_SIZE": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}  # fmt: skip
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        init = subprocess.Popen([*entrypoint, *command], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            assert init.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        check = service["healthcheck"]["test"][1:]
        health = subprocess.run([*check, "--file", str(beat)], env=env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert health.returncode == 0, health.stderr

        running = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 3}})
        waiting = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 1}})
        started = f"{TEST_PREFIX}:test:started:{running.id}"
        while not redis_client.llen(started):
            assert time.monotonic() < deadline, "the event never started"
            time.sleep(0.05)
        os.kill(init.pid, signal.SIGTERM)  # PID 1 only, as docker stop does
        assert init.wait(parse_duration(service["stop_grace_period"])) == 0
    finally:
        if init.poll() is None:
            os.killpg(init.pid, signal.SIGKILL)
            init.wait(5)
    # both ran to the end before the worker exited: the running one and the prefetched one
    assert running.result(timeout=5).output == {"slept": 3}
    assert waiting.result(timeout=5).output == {"slept": 1}
    assert "Warm shutdown" in log.read_text(errors="replace")
    assert redis_client.llen("agentflow.agent.slow_async") == 0
    assert not beat.exists()  # a stopped worker removes its beat: the probe fails
