"""A producer that only speaks Flower's HTTP API gets the agent's result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT, TEST_ENV

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flower_http_api_producer_gets_the_result(start_worker, redis_client, tmp_path) -> None:
    start_worker()
    port = _free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "agentflow", "flower", f"--port={port}",
         "--address=127.0.0.1", "--basic-auth=ops:secret"],
        env={**os.environ, **TEST_ENV}, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = ("ops", "secret")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
            time.sleep(0.2)
        assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
        event = {"type": "via-flower", "agent": "echo", "data": {"from": "flower"}}
        sent = httpx.post(f"{base}/api/task/send-task/agentflow.run_event", auth=auth,
                          json={"args": [event], "queue": "agentflow.agent.echo"}, timeout=10)  # fmt: skip
        assert sent.status_code == 200, sent.text
        task_id = sent.json()["task-id"]
        result = httpx.get(f"{base}/api/task/result/{task_id}", params={"timeout": 30},
                           auth=auth, timeout=40).json()  # fmt: skip
        assert result["state"] == "SUCCESS", result
        assert result["result"]["output"] == {"echo": {"from": "flower"}, "type": "via-flower"}
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200 and "flower_" in metrics.text
    finally:
        flower.terminate()
        try:
            flower.wait(15)
        except subprocess.TimeoutExpired:
            flower.kill()
        log.close()
