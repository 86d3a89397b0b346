"""Waiting for a signal without holding a slot: ``WaitFor``, ``Client.signal``, timeouts.

Real workers, a real Redis. Timeouts run on the simulated clock of the delayed-events
scheduler (workers started with ``AGENTFLOW_TEST_CLOCK=1``; see test_scheduled.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis

from agentflow import AsyncClient, Client, EventCancelled, EventFailed
from agentflow._redis.keys import Keys
from agentflow.state import StateStore
from tests.agents_later import LATER_MODULES
from tests.conftest import TEST_PREFIX, cli_env

pytestmark = pytest.mark.integration

KEYS = Keys(TEST_PREFIX)
ENV = {
    "AGENTFLOW_TEST_CLOCK": "1",
    "AGENTFLOW_RUNNER__SCHEDULER_INTERVAL": "100ms",
    "AGENTFLOW_AGENTS__MODULES": LATER_MODULES,
}


def _count(r: redis.Redis, kind: str, event_id: str) -> int:
    return int(r.llen(f"{TEST_PREFIX}:test:{kind}:{event_id}"))


def _wait_state(client: Client, event_id: str, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.state(event_id) != state:
        assert time.monotonic() < deadline, f"{event_id} never reached {state}"
        time.sleep(0.05)


def test_a_signal_resumes_the_event_and_the_wait_holds_no_slot(start_worker, client,
                                                                redis_client):  # fmt: skip
    start_worker(concurrency=1, env=ENV)
    handle = client.emit({"type": "t", "agent": "approver", "session_id": "s1",
                          "data": {"ask": "deploy?"}})  # fmt: skip
    _wait_state(client, handle.id, "WAITING")
    # The worker has one slot: it runs other events while this one waits.
    others = [client.emit({"type": "t", "agent": "stamp", "data": {"i": i}}) for i in range(3)]
    assert [h.result(timeout=30).output["data"]["i"] for h in others] == [0, 1, 2]
    assert not handle.ready() and client.state(handle.id) == "WAITING"
    assert client.signal(handle.id, "denial", {"ok": False}) is False  # not what it waits for
    assert handle.signal("approval", {"ok": True}) is True
    result = handle.result(timeout=30)
    assert result.output["signal"] == "approval" and result.output["payload"] == {"ok": True}
    assert result.output["timed_out"] is False
    assert result.output["context"] == {"ask": "deploy?"}
    assert client.signal(handle.id, "approval", {"ok": "again"}) is False  # over
    assert client.state(handle.id) == "SUCCESS"
    assert (_count(redis_client, "runs", handle.id), _count(redis_client, "resumes", handle.id)) \
        == (1, 1)  # fmt: skip
    assert StateStore(redis_client, prefix=TEST_PREFIX).load("s1")["approvals"] == 1


def test_a_timeout_resumes_with_the_marker(start_worker, client, redis_client):
    start_worker(concurrency=2, env=ENV)
    handle = client.emit({"type": "t", "agent": "approver", "data": {"timeout": "1h"}})
    _wait_state(client, handle.id, "WAITING")
    redis_client.set(KEYS.clock_offset, 1800)  # half way: still waiting
    short = client.emit({"type": "t", "agent": "stamp"}, delay=1700)
    short.result(timeout=30)  # the scheduler has run with this clock
    assert client.state(handle.id) == "WAITING"
    redis_client.set(KEYS.clock_offset, 3605)
    result = handle.result(timeout=30)
    assert result.output["timed_out"] is True and result.output["payload"] is None
    assert result.output["signal"] == "approval"
    assert client.signal(handle.id, "approval", "late") is False
    assert _count(redis_client, "resumes", handle.id) == 1
    assert redis_client.zcard(KEYS.scheduled) == 0


def test_racing_signals_and_timeout_resume_each_event_once(start_worker, client, redis_client):
    start_worker(concurrency=8, env=ENV)
    start_worker(concurrency=8, env=ENV)
    handles = [client.emit({"type": "t", "agent": "approver", "data": {"timeout": 60}})
               for _ in range(20)]  # fmt: skip
    for h in handles:
        _wait_state(client, h.id, "WAITING")
    wins: dict[str, list[int]] = {h.id: [] for h in handles}
    start = threading.Barrier(8 * len(handles) + 1)

    def send(i: int, event_id: str, n: int) -> None:
        start.wait()
        time.sleep(i * 0.02)  # staggered: early events' signals race each other, later ones
        if client.signal(event_id, "approval", n):  # race the timeout too
            wins[event_id].append(n)

    threads = [threading.Thread(target=send, args=(i, h.id, n))
               for i, h in enumerate(handles) for n in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    start.wait()
    time.sleep(0.2)
    redis_client.set(KEYS.clock_offset, 65)  # every timeout is due as the signals fly
    for t in threads:
        t.join()
    for h in handles:
        result = h.result(timeout=60).output
        if result["timed_out"]:
            assert wins[h.id] == []
        else:
            assert wins[h.id] == [result["payload"]]
        assert _count(redis_client, "resumes", h.id) == 1


def test_a_worker_killed_while_an_event_waits_leaves_it_resumable(start_worker, client,
                                                                   redis_client):  # fmt: skip
    first = start_worker(concurrency=2, env=ENV)
    handle = client.emit({"type": "t", "agent": "approver", "data": {"ask": "ship?"}})
    _wait_state(client, handle.id, "WAITING")
    first.kill()
    first.proc.wait(10)
    start_worker(concurrency=2, env=ENV)
    assert client.signal(handle.id, "approval", "yes") is True
    result = handle.result(timeout=60)
    assert result.output["payload"] == "yes" and result.output["context"] == {"ask": "ship?"}
    assert result.output["pid"] != first.pid
    assert _count(redis_client, "runs", handle.id) == 1


def test_function_agents_wait_again_async_cli_and_cancel(start_worker, client, redis_client):
    start_worker(concurrency=2, env=ENV)

    async def via_async() -> Any:
        async with AsyncClient() as aclient:
            handle = await aclient.emit({"type": "t", "agent": "gatekeeper"})
            while await aclient.state(handle.id) != "WAITING":
                await asyncio.sleep(0.05)
            assert await handle.signal("open", "again") is True
            # It waits once more: a signal is taken once the new wait is on.
            deadline = time.monotonic() + 30
            while not await aclient.signal(handle.id, "open", "sesame"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return await handle.result(timeout=30)

    result = asyncio.run(via_async())
    assert result.output == {"opened_with": "sesame", "n": 2}

    handle = client.emit({"type": "t", "agent": "gatekeeper"})
    _wait_state(client, handle.id, "WAITING")
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "signal", handle.id, "open",
                          "--payload", '{"by": "cli"}'], env=cli_env(), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert handle.result(timeout=30).output == {"opened_with": {"by": "cli"}, "n": 1}
    again = subprocess.run([sys.executable, "-m", "agentflow.cli", "signal", handle.id, "open"],
                           env=cli_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode != 0 and "does not wait" in again.stderr

    waiting = client.emit({"type": "t", "agent": "gatekeeper"})
    _wait_state(client, waiting.id, "WAITING")
    assert waiting.cancel() is True
    with pytest.raises(EventCancelled):
        waiting.result(timeout=30)
    assert client.signal(waiting.id, "open", "too late") is False
    assert _count(redis_client, "resumes", waiting.id) == 0

    orphan = client.emit({"type": "t", "agent": "no_resume"})
    with pytest.raises(EventFailed, match="no on_signal"):
        orphan.result(timeout=30)
    assert _count(redis_client, "resumes", result.event_id) == 2


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_waits_and_delays_on_celerys_own_pools(pool, start_worker, client, redis_client):
    start_worker(concurrency=2, pool=pool, env=ENV)
    handle = client.emit({"type": "t", "agent": "approver", "data": {"timeout": 600}})
    _wait_state(client, handle.id, "WAITING")
    delayed = client.emit({"type": "t", "agent": "stamp"}, delay=0.5)
    assert delayed.result(timeout=30).output["ran_at"] >= delayed.event.created_at.timestamp()
    assert client.signal(handle.id, "approval", pool) is True
    assert handle.result(timeout=30).output["payload"] == pool
    timed = client.emit({"type": "t", "agent": "approver", "data": {"timeout": 60}})
    _wait_state(client, timed.id, "WAITING")
    redis_client.set(KEYS.clock_offset, 65)
    assert timed.result(timeout=30).output["timed_out"] is True
