"""A whole AgentFlow cluster on one machine: Redis, the mock LLM and worker processes.

`make demo` and `agentflow benchmark --local` use it. Everything it starts it stops again:
the embedded Redis (its own, in a temporary directory, unless a URL is given), the mock LLM
server process and the `celery -A agentflow worker` processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis

from agentflow.errors import AgentFlowError


@dataclass
class ClusterSpec:
    """What to start."""

    workers: int = 1
    concurrency: int = 100
    pool: str | None = None
    """``-P`` for the workers; None starts them as the README does (AgentFlow's pool)."""
    queues: list[str] | None = None
    redis_url: str | None = None
    """Use this Redis; None starts a private embedded one."""
    mock_llm: bool = True
    mock_latency: str = "50ms"
    key_prefix: str = "agentflow"
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0


class LocalCluster:
    """Start with ``with LocalCluster(spec) as cluster:``; ``cluster.env`` configures clients."""

    def __init__(self, spec: ClusterSpec | None = None) -> None:
        self.spec = spec or ClusterSpec()
        self.tmp = Path(tempfile.mkdtemp(prefix="agentflow-cluster-"))
        self.redis_url = ""
        self.mock_url: str | None = None
        self.env: dict[str, str] = {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self._embedded_dir: Path | None = None
        self._mock: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Bring everything up; raises AgentFlowError (after cleaning up) if a part fails."""
        try:
            self._start_redis()
            if self.spec.mock_llm:
                self._start_mock()
            self.env = self._client_env()
            for i in range(self.spec.workers):
                self._start_worker(i)
            self._wait_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        from agentflow._redis.embedded import ensure_embedded

        if self.spec.redis_url:
            self.redis_url = self.spec.redis_url
            return
        self._embedded_dir = self.tmp / "redis"
        self.redis_url = ensure_embedded(self._embedded_dir)

    def _start_mock(self) -> None:
        from agentflow.mock_llm import start_mock_llm_process

        self._mock = start_mock_llm_process(port=0, latency=self.spec.mock_latency)
        self.mock_url = str(self._mock.url)

    def _client_env(self) -> dict[str, str]:
        env = {
            "AGENTFLOW_BROKER__URL": self.redis_url,
            "AGENTFLOW_BROKER__KEY_PREFIX": self.spec.key_prefix,
        }
        if self.mock_url:
            base = self.mock_url.rstrip("/")
            env["AGENTFLOW_LLM__PROVIDER"] = "openai"
            env["AGENTFLOW_LLM__OPENAI__ENDPOINT"] = base + "/v1"
            env["AGENTFLOW_LLM__OPENAI__API_KEY"] = "mock-key"
        env.update(self.spec.env)
        return env

    def _start_worker(self, index: int) -> None:
        args = [sys.executable, "-m", "celery", "-A", "agentflow", "worker",
                *(["-P", self.spec.pool] if self.spec.pool else []), "-c", str(self.spec.concurrency),
                "-n", f"local{index}-{os.getpid()}@%h", "-l", "WARNING",
                "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
        if self.spec.queues:
            args += ["-Q", ",".join(self.spec.queues)]
        log = open(self.tmp / f"worker{index}.log", "wb")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            args, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.workers.append(proc)

    def _wait_workers(self) -> None:
        """Ready when every worker has announced itself (see agentflow/_worker/signals.py)."""
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + self.spec.ready_timeout
        key = f"{self.spec.key_prefix}:workers:ready"
        try:
            while time.monotonic() < deadline:
                for i, proc in enumerate(self.workers):
                    if proc.poll() is not None:
                        raise AgentFlowError(
                            f"worker {i} exited with {proc.returncode}: "
                            f"{(self.tmp / f'worker{i}.log').read_text(errors='replace')[-2000:]}"
                        )
                pids = {int(p) for p in cast(Any, client.smembers(key))}
                if all(p.pid in pids for p in self.workers):
                    return
                time.sleep(0.1)
        finally:
            client.close()
        raise AgentFlowError(
            f"workers not ready after {self.spec.ready_timeout}s; logs in {self.tmp}"
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the worker main processes."""
        return [p.pid for p in self.workers]

    def stop(self) -> None:
        """Stop workers (warm shutdown, then SIGKILL), the mock LLM and the embedded Redis."""
        for proc in self.workers:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        self.workers.clear()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        if self._embedded_dir is not None:
            from agentflow._redis.embedded import stop_embedded

            stop_embedded(self._embedded_dir)
            self._embedded_dir = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
