"""A real `agentflow gateway` process on a free loopback port, for the gateway tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentflow.gateway.auth import hash_key
from tests.conftest import ROOT, cli_env

ALL_KEY = "test-key-all-agents"
ECHO_KEY = "test-key-echo-only"
SLOW_KEY = "test-key-two-requests"
KEYS = [
    {"hash": hash_key(ALL_KEY), "name": "all", "agents": ["*"], "rate": 10000},
    {"hash": hash_key(ECHO_KEY), "name": "echo", "agents": ["echo"], "rate": 10000},
    {"hash": hash_key(SLOW_KEY), "name": "slow", "agents": ["*"], "rate": 0.001, "burst": 2},
]


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m agentflow.cli gateway` as a subprocess."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = cli_env(**{"AGENTFLOW_GATEWAY__KEYS": json.dumps(KEYS), **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentflow.cli", "gateway", "--port", str(self.port),
             *(args or [])],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        """What the gateway printed."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /healthz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def gateway(redis_client, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A ready gateway on the suite's Redis, with the keys in `KEYS` and a 4 KiB body limit."""
    proc = GatewayProcess(tmp_path / "gateway.log",
                          env={"AGENTFLOW_GATEWAY__MAX_BODY_BYTES": "4096"})  # fmt: skip
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def auth(key: str) -> dict[str, str]:
    """The header that presents `key`."""
    return {"Authorization": f"Bearer {key}"}
