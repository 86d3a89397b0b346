"""Shared fixtures: a Redis of the suite's own, real worker processes, a Client.

The suite uses `$AGENTFLOW_TEST_REDIS_URL` (scripts/test.sh starts a private redis-server
for each run); without it, it starts a private embedded Redis of its own in a temporary
directory. It never uses a shared Redis, so two runs on one machine never meet. Every
integration test starts from an empty database and leaves it empty. Workers are real
`celery -A agentflow worker` processes, configured through the same environment variables a
user would set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
_TMP = Path(tempfile.mkdtemp(prefix="agentflow-tests-"))


def _base_url() -> str:
    url = os.environ.get("AGENTFLOW_TEST_REDIS_URL")
    if url:
        return url
    from agentflow._redis.embedded import ensure_embedded

    return ensure_embedded(_TMP / "redis")


TEST_REDIS_URL = _base_url()
TEST_PREFIX = "aftest"
# Set before anything reads settings, so the in-process app and every worker agree.
_EMPTY_CONFIG = _TMP / "agentflow.toml"
_EMPTY_CONFIG.write_text("")
TEST_ENV = {
    "AGENTFLOW_CONFIG": str(_EMPTY_CONFIG),
    "AGENTFLOW_BROKER__URL": TEST_REDIS_URL,
    "AGENTFLOW_BROKER__KEY_PREFIX": TEST_PREFIX,
    "AGENTFLOW_BROKER__EMBEDDED_DIR": str(_TMP / "redis"),
    "AGENTFLOW_MONITORING__ENABLE_METRICS": "false",
    # Ship the example agents used by the tests to workers.
    "AGENTFLOW_AGENTS__MODULES": '["tests.agents"]',
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
}
os.environ.update(TEST_ENV)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop any Redis a test started in this run's embedded folder, and remove the folder."""
    import shutil

    from agentflow._redis.embedded import stop_embedded

    stop_embedded(_TMP / "redis")
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the suite's own Redis database."""
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the suite's database, emptied before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


class WorkerProcess:
    """One real `celery -A agentflow worker` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """The worker's main process id."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker has logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until Celery logs that the worker is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the worker and all its children (SIGKILL by default)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM); SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(redis_client: redis.Redis, tmp_path: Path) -> Iterator[StartWorker]:
    """Factory: `start_worker(queues=..., concurrency=4, pool=None, env={...})`.

    `pool` None starts the worker as the README does (no ``-P``: AgentFlow's asyncio pool);
    "prefork", "threads" or "solo" pass ``-P``.

    Returns a ready :class:`WorkerProcess`; all are stopped when the test ends.
    `env` adds environment variables (e.g. ``{"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "2s"}``).
    """
    workers: list[WorkerProcess] = []

    def start(
        queues: list[str] | None = None,
        concurrency: int = 4,
        pool: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        name = f"w{len(workers)}-{uuid.uuid4().hex[:6]}@%h"
        args = [sys.executable, "-m", "celery", "-A", "agentflow", "worker",
                "-c", str(concurrency), "-n", name, "-l", "INFO",
                "--without-mingle", "--without-gossip"]  # fmt: skip
        if pool:
            args += ["-P", pool]
        if queues:
            args += ["-Q", ",".join(queues)]
        args += extra_args or []
        full_env = {**os.environ, **TEST_ENV, **(env or {})}
        worker = WorkerProcess(args, full_env, tmp_path / f"worker{len(workers)}.log")
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def client(redis_client: redis.Redis) -> Iterator[Any]:
    """An AgentFlow Client on the suite's Redis."""
    from agentflow import Client
    from agentflow.config import reset_settings

    reset_settings()
    c = Client()
    yield c
    c.close()


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running the `agentflow` CLI as a subprocess against the test Redis."""
    return {**os.environ, **TEST_ENV, **extra}
