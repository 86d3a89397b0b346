"""Redis restarts and crowded producers.

- Redis restarted **without persistence** while events are queued and running: workers
  notice (an error in their log), announce their agents again, keep the messages they hold;
  the producer gets :class:`ResultLost` for exactly the events that were only queued, and
  new events run. **With persistence** (appendonly) the same restart loses nothing.
- An ``AsyncClient`` rides out a restart of a persistent Redis: its waiting handles get
  their results through the subscription it opens again, and its shared connection
  reopens for the next emits.
- 200 producer threads share one ``Client`` for W1 (a 50 ms LLM call per event): no
  connection-pool error, and every event's result arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from agentflow import AsyncClient, Client, ResultLost, load_settings
from agentflow._redis.embedded import ping, redis_server_binary
from agentflow.mock_llm import start_mock_llm_process
from tests.conftest import TEST_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


class RestartableRedis:
    """A redis-server of the test's own on a fixed port, which it can restart."""

    def __init__(self, directory: Path, persistent: bool) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = directory
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--daemonize", "yes", "--save", "",
                "--pidfile", str(self.dir / "redis.pid"), "--logfile", str(self.dir / "log"),
                "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self.persistent else "no"]  # fmt: skip
        subprocess.run(args, check=True, timeout=10)
        deadline = time.monotonic() + 10
        while not ping(self.url):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def stop(self) -> None:
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(self.url).shutdown(nosave=not self.persistent)

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()


def _client(url: str) -> Client:
    app = Celery("producer", broker=url, backend=url, set_as_current=False)
    app.conf.broker_transport = "agentflow._redis.transport:Transport"
    settings = load_settings(broker={"url": url, "key_prefix": TEST_PREFIX},
                             runner={"max_concurrent_events": 10_000})  # fmt: skip
    return Client(app=app, settings=settings)


@pytest.mark.parametrize("persistent", [False, True], ids=["no-persistence", "appendonly"])
def test_redis_restart(persistent: bool, tmp_path: Path, start_worker: Any) -> None:
    server = RestartableRedis(tmp_path, persistent)
    server.start()
    env = {"AGENTFLOW_BROKER__URL": server.url, "AGENTFLOW_MONITORING__METRICS_INTERVAL": "1s",
           "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "6s"}  # fmt: skip
    worker = start_worker(concurrency=2, env=env, extra_args=["--prefetch-multiplier", "2"])
    client = _client(server.url)
    try:
        handles = [client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 3}})
                   for _ in range(12)]  # fmt: skip
        probe = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 30
        while probe.llen("agentflow.agent.slow_async") > 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # two running, two more held by the worker, eight queued
        queued_at_restart = probe.llen("agentflow.agent.slow_async")
        server.restart()
        done, lost = 0, 0
        for handle in handles:
            try:
                handle.result(timeout=90)
                done += 1
            except ResultLost:
                lost += 1
        if persistent:
            assert (done, lost) == (12, 0)
            return
        assert lost == queued_at_restart and done == 12 - queued_at_restart, (done, lost)
        deadline = time.monotonic() + 15
        while "Redis came back empty" not in worker.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Redis came back empty" in worker.log()
        # A producer that starts now finds the agents announced again, and events run.
        fresh = _client(server.url)
        try:
            assert fresh.emit({"type": "t", "agent": "echo", "data": {"x": 1}}).result(
                timeout=30).output["echo"] == {"x": 1}  # fmt: skip
        finally:
            fresh.close()
    finally:
        client.close()
        worker.stop()
        server.stop()


@pytest.mark.parametrize("task_events", [False, True], ids=["events-off", "task-events"])
def test_async_client_rides_out_a_redis_restart(task_events: bool, tmp_path: Path,
                                                start_worker: Any) -> None:  # fmt: skip
    """With task events on, their messages go out on the worker's loop and meet the restart
    too: the worker keeps running and nothing is lost."""
    server = RestartableRedis(tmp_path, persistent=True)
    server.start()
    worker = start_worker(concurrency=20, env={
        "AGENTFLOW_BROKER__URL": server.url,
        "AGENTFLOW_MONITORING__TASK_EVENTS": str(task_events).lower()})  # fmt: skip
    app = Celery("producer", broker=server.url, backend=server.url, set_as_current=False)
    app.conf.broker_transport = "agentflow._redis.transport:Transport"
    settings = load_settings(broker={"url": server.url, "key_prefix": TEST_PREFIX},
                             runner={"max_concurrent_events": 10_000})  # fmt: skip

    async def run() -> tuple[int, int]:
        async with AsyncClient(app=app, settings=settings) as client:
            slow = [await client.emit({"type": "t", "agent": "slow_async",
                                       "data": {"seconds": 2}}) for _ in range(10)]  # fmt: skip
            waits = [asyncio.create_task(h.result(timeout=90)) for h in slow]
            await asyncio.sleep(0.5)  # all ten waiting on the subscription
            await asyncio.to_thread(server.restart)
            done = sum(r.output["slept"] == 2 for r in await asyncio.gather(*waits))
            after = []
            for i in range(40):  # the first ones may meet the old, broken connection
                handle = await client.emit({"type": "t", "agent": "echo", "data": {"i": i}})
                after.append((await handle.result(timeout=30)).output["echo"]["i"] == i)
            return done, sum(after)

    try:
        assert asyncio.run(run()) == (10, 40)
    finally:
        worker.stop()
        server.stop()


def test_200_producer_threads_share_one_client_for_w1(start_worker: Any) -> None:
    mock = start_mock_llm_process(port=0, latency="50ms")
    try:
        env = {"AGENTFLOW_LLM__PROVIDER": "openai",
               "AGENTFLOW_LLM__OPENAI__ENDPOINT": str(mock.url).rstrip("/") + "/v1",
               "AGENTFLOW_LLM__OPENAI__API_KEY": "mock-key",
               "AGENTFLOW_LLM__OPENAI__MAX_CONNECTIONS": "200"}  # fmt: skip
        start_worker(concurrency=200, env=env)
        start_worker(concurrency=200, env=env)
        client = Client(settings=load_settings(runner={"max_concurrent_events": 1000}))
        errors: list[BaseException] = []
        results = [0]
        lock = threading.Lock()

        def user(i: int) -> None:
            for j in range(15):
                try:
                    handle = client.emit({"type": "t", "agent": "chat",
                                          "data": {"prompt": f"u{i} {j}", "cache": False}})  # fmt: skip
                    handle.result(timeout=120)
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                else:
                    with lock:
                        results[0] += 1

        threads = [threading.Thread(target=user, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        client.close()
    finally:
        mock.stop()
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert results[0] == 200 * 15
