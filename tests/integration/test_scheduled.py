"""Delayed and scheduled events: ``emit(..., delay=...)`` / ``emit(..., at=...)``.

Real workers, a real Redis. Long delays are tested on a simulated clock: workers started
with ``AGENTFLOW_TEST_CLOCK=1`` add ``<prefix>:test:clock_offset`` to their scheduler's
clock (a test-only hook), so "a day later" is one SET away.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from agentflow import AsyncClient, Client, EventCancelled, load_settings
from agentflow._redis.keys import Keys
from agentflow._redis.queues import agent_queue
from tests.agents_later import LATER_MODULES
from tests.conftest import TEST_PREFIX, cli_env
from tests.integration.redis_server import free_port

pytestmark = pytest.mark.integration

KEYS = Keys(TEST_PREFIX)
DAY = 86400.0
CLOCK_ENV = {
    "AGENTFLOW_TEST_CLOCK": "1",
    "AGENTFLOW_RUNNER__SCHEDULER_INTERVAL": "100ms",
    "AGENTFLOW_AGENTS__MODULES": LATER_MODULES,
}
SCHEDULERS_ONLY = ["-Q", agent_queue("echo")]
"""Workers that schedule but do not take the test's events (which stay on their queue)."""


def _runs(r: redis.Redis, event_id: str) -> int:
    return int(r.llen(f"{TEST_PREFIX}:test:runs:{event_id}"))


def _scheduled(r: redis.Redis, event_id: str) -> bool:
    return r.zscore(KEYS.scheduled, event_id) is not None


def _set_clock(r: redis.Redis, offset: float) -> None:
    r.set(KEYS.clock_offset, repr(offset))


def _wait_for(check: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _queued_ids(r: redis.Redis, queue: str) -> list[str]:
    return [json.loads(item)["headers"]["id"] for item in r.lrange(queue, 0, -1)]


def test_a_delayed_event_runs_once_it_is_due_not_before(start_worker, client, redis_client):
    start_worker(concurrency=2, env=CLOCK_ENV)
    handle = client.emit({"type": "t", "agent": "stamp", "data": {"k": 1}}, delay=1.5)
    due = redis_client.zscore(KEYS.scheduled, handle.id)
    assert due is not None and due > time.time()
    assert redis_client.llen(agent_queue("stamp")) == 0
    result = handle.result(timeout=30)
    assert result.output["data"] == {"k": 1}
    assert result.output["ran_at"] >= due
    assert _runs(redis_client, handle.id) == 1
    assert not _scheduled(redis_client, handle.id)
    assert redis_client.hlen(KEYS.scheduled_items) == 0


def test_delays_from_a_second_to_a_day_on_a_simulated_clock(start_worker, client, redis_client):
    start_worker(concurrency=2, env=CLOCK_ENV)
    delays = [1.0, 60.0, 3600.0, DAY - 60, DAY]
    # Each step moves the clock just past one delay; that event runs, the later ones do not.
    offsets = [0.0, 65.0, 3605.0, DAY - 55, DAY + 5]
    handles = [client.emit({"type": "t", "agent": "stamp", "data": {"delay": d}},
                           delay=timedelta(seconds=d)) for d in delays]  # fmt: skip
    for i, offset in enumerate(offsets):
        _set_clock(redis_client, offset)
        assert handles[i].result(timeout=30).output["data"] == {"delay": delays[i]}
        for later in handles[i + 1 :]:  # the scheduler has run with this clock: not moved
            assert _scheduled(redis_client, later.id), (offset, later.event.data)
            assert _runs(redis_client, later.id) == 0
            assert client.state(later.id) == "PENDING"
    assert [_runs(redis_client, h.id) for h in handles] == [1] * len(handles)


def test_at_a_time_and_from_asyncio_and_the_cli(start_worker, redis_client):
    start_worker(concurrency=2, env=CLOCK_ENV)

    async def emit_async() -> tuple[str, Any]:
        async with AsyncClient() as aclient:
            at = datetime.now(UTC) + timedelta(hours=2)
            handle = await aclient.emit({"type": "t", "agent": "stamp"}, at=at)
            assert redis_client.zscore(KEYS.scheduled, handle.id) == pytest.approx(
                at.timestamp())  # fmt: skip
            _set_clock(redis_client, 2 * 3600 + 5)
            return handle.id, await handle.result(timeout=30)

    event_id, result = asyncio.run(emit_async())
    assert result.event_id == event_id and _runs(redis_client, event_id) == 1
    _set_clock(redis_client, 0)
    out = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "emit", "--agent", "stamp", "--type", "t",
         "--data", '{"via": "cli"}', "--delay", "1s", "--wait", "--timeout", "30"],
        env=cli_env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"]["data"] == {"via": "cli"}
    bad = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "emit", "--agent", "stamp", "--type", "t",
         "--delay", "1h", "--at", "2030-01-01T00:00:00"],
        env=cli_env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert bad.returncode != 0 and "not both" in bad.stderr


def test_a_cancelled_delayed_event_never_runs(start_worker, client, redis_client):
    start_worker(concurrency=2, env=CLOCK_ENV)
    handle = client.emit({"type": "t", "agent": "stamp"}, delay="1d")
    assert _scheduled(redis_client, handle.id)
    assert handle.cancel() is True
    with pytest.raises(EventCancelled):
        handle.result(timeout=30)
    assert client.state(handle.id) == "REVOKED"
    assert not _scheduled(redis_client, handle.id)
    _set_clock(redis_client, DAY + 60)
    time.sleep(1)  # a few scheduler ticks past the day: nothing comes back to run
    assert _runs(redis_client, handle.id) == 0
    assert redis_client.zcard(KEYS.scheduled) == 0


def test_racing_schedulers_move_each_event_exactly_once(start_worker, client, redis_client):
    for _ in range(4):
        start_worker(concurrency=1, env=CLOCK_ENV, extra_args=SCHEDULERS_ONLY)
    big = Client(settings=load_settings(runner={"max_concurrent_events": 100_000}))
    try:
        handles = big.emit_many(({"type": "t", "agent": "ledger", "data": {"i": i}}
                                    for i in range(3000)), delay=DAY)  # fmt: skip
        assert redis_client.zcard(KEYS.scheduled) == 3000
        assert redis_client.llen(agent_queue("ledger")) == 0
        _set_clock(redis_client, DAY + 10)  # all due at once: four schedulers race
        _wait_for(lambda: redis_client.zcard(KEYS.scheduled) == 0, what="the set to drain")
        queued = _queued_ids(redis_client, agent_queue("ledger"))
        assert len(queued) == 3000 and set(queued) == {h.id for h in handles}
        start_worker(concurrency=8, env=CLOCK_ENV)  # now someone runs them
        for h in handles:
            h.result(timeout=120)
        assert all(_runs(redis_client, h.id) == 1 for h in handles)
    finally:
        big.close()


def test_schedulers_killed_while_moving_lose_nothing(start_worker, client, redis_client):
    workers = [start_worker(concurrency=1, env=CLOCK_ENV, extra_args=SCHEDULERS_ONLY)
               for _ in range(3)]  # fmt: skip
    big = Client(settings=load_settings(runner={"max_concurrent_events": 100_000}))
    try:
        ids: set[str] = set()
        # 30 batches of 200, due every 0.1 s of simulated time over 3 s.
        for step in range(30):
            handles = big.emit_many(({"type": "t", "agent": "ledger"} for _ in range(200)),
                                       delay=DAY + step * 0.1)  # fmt: skip
            ids.update(h.id for h in handles)
        _set_clock(redis_client, DAY - 1)
        rng = random.Random(15)
        kills = 0
        while redis_client.zcard(KEYS.scheduled) and kills < 12:
            time.sleep(rng.uniform(0.05, 0.4))
            victim = rng.randrange(len(workers))
            workers[victim].kill(signal.SIGKILL)
            kills += 1
            workers[victim] = start_worker(concurrency=1, env=CLOCK_ENV,
                                           extra_args=SCHEDULERS_ONLY, wait=False)  # fmt: skip
        assert kills >= 1
        _wait_for(lambda: redis_client.zcard(KEYS.scheduled) == 0, what="the set to drain")
        queued = _queued_ids(redis_client, agent_queue("ledger"))
        assert len(queued) == len(ids) == 6000
        assert set(queued) == ids
        assert redis_client.hlen(KEYS.scheduled_items) == 0
    finally:
        big.close()


class _Redis:
    """A redis-server with AOF (fsync always) on a fixed port, which the test can SIGKILL."""

    def __init__(self, directory: Path) -> None:
        from agentflow._redis.embedded import redis_server_binary

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self.args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(directory), "--save", "", "--appendonly", "yes",
                     "--appendfsync", "always", "--logfile", str(directory / "log")]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        probe = redis.Redis.from_url(self.url, socket_timeout=1)
        _wait_for(lambda: _pings(probe), timeout=20, what="redis-server")
        probe.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def test_scheduled_events_survive_a_redis_restart_with_aof(start_worker, tmp_path):
    server = _Redis(tmp_path / "aof")
    server.start()
    app = Celery("producer", broker=server.url, backend=server.url, set_as_current=False)
    app.conf.broker_transport = "agentflow._redis.transport:Transport"
    settings = load_settings(broker={"url": server.url, "key_prefix": TEST_PREFIX})
    client: Client | None = None
    worker = None
    try:
        env = {**CLOCK_ENV, "AGENTFLOW_BROKER__URL": server.url}
        worker = start_worker(concurrency=2, env=env)
        client = Client(app=app, settings=settings)
        handles = client.emit_many(({"type": "t", "agent": "stamp", "data": {"i": i}}
                                    for i in range(20)), delay="1d")  # fmt: skip
        server.kill()  # no shutdown, no save: only the AOF keeps them
        server.start()
        probe = redis.Redis.from_url(server.url)
        assert probe.zcard(KEYS.scheduled) == 20
        _set_clock(probe, DAY + 10)
        assert sorted(h.result(timeout=60).output["data"]["i"] for h in handles) == list(
            range(20))  # fmt: skip
        assert all(_runs(probe, h.id) == 1 for h in handles)
        probe.close()
    finally:
        if client is not None:
            client.close()
        if worker is not None:
            worker.stop()
        server.kill()
