"""The default worker is a real Celery worker: inspect, revoke, cancel and signals work on it.

Every event, tool call and continuation AgentFlow's pool runs is a request in Celery's worker
state, so ``celery inspect`` lists it, ``revoke`` stops it, and the task signals Sentry and
OpenTelemetry hook into fire with Celery's arguments.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from agentflow import Client, EventCancelled
from agentflow.celery_app import app
from agentflow.state import StateStore
from tests.conftest import TEST_PREFIX, cli_env

pytestmark = pytest.mark.integration


def _wait_started(redis_client: Any, event_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not redis_client.llen(f"{TEST_PREFIX}:test:started:{event_id}"):
        assert time.monotonic() < deadline, "the event never started"
        time.sleep(0.05)


def _signals(redis_client: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in redis_client.lrange(f"{TEST_PREFIX}:test:signals", 0, -1)]


def _active_row(inspect: Any, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """The `inspect active` row of `task_id` (asked again while no reply lists it: a reply
    that comes after the broadcast's timeout, on a busy machine, is dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        active = [r for rows in (inspect.active() or {}).values() for r in rows]
        rows = [r for r in active if r["id"] == task_id]
        if rows or time.monotonic() > deadline:
            (row,) = rows
            return dict(row)


def test_inspect_lists_running_and_reserved_events(start_worker, client, redis_client):
    worker = start_worker(concurrency=1)
    running = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 30}})
    waiting = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 30}})
    _wait_started(redis_client, running.id)
    inspect = app.control.inspect(timeout=5)
    row = _active_row(inspect, running.id)
    assert row["name"] == "agentflow.run_event"
    assert row["worker_pid"] == worker.pid and row["time_start"] and row["hostname"]
    assert "slow_async" in str(row["args"])
    reserved = [r["id"] for rows in (inspect.reserved() or {}).values() for r in rows]
    assert waiting.id in reserved and running.id not in reserved
    stats = next(iter((inspect.stats() or {}).values()))
    assert stats["total"].get("agentflow.run_event", 0) >= 1
    assert stats["pool"]["max-concurrency"] == 1
    client.cancel(running.id)
    client.cancel(waiting.id)


@pytest.mark.parametrize("agent", ["slow_async", "slow_sync"])
def test_revoke_terminate_stops_a_running_event(agent, start_worker, client, redis_client):
    start_worker(concurrency=4)
    handle = client.emit({"type": "t", "agent": agent, "session_id": "rv",
                          "data": {"seconds": 60}})  # fmt: skip
    _wait_started(redis_client, handle.id)
    started = time.monotonic()
    app.control.revoke(handle.id, terminate=True)
    with pytest.raises(EventCancelled):
        handle.result(timeout=10)
    assert time.monotonic() - started < 2.0 + 1.0  # within 2 s (plus the client's read)
    deadline = time.monotonic() + 10
    while not redis_client.llen(f"{TEST_PREFIX}:test:cancelled:{handle.id}"):
        assert time.monotonic() < deadline, "the agent's code was never told"
        time.sleep(0.05)
    assert client.state(handle.id) == "REVOKED"
    time.sleep(1.0)
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0  # cancelled is not dead-lettered
    assert redis_client.llen("agentflow.agent." + agent) == 0  # nor redelivered
    assert redis_client.hlen("unacked") == 0


def test_revoke_stops_an_event_waiting_for_a_slot(start_worker, client, redis_client):
    start_worker(concurrency=1)
    busy = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 3}})
    queued = client.emit({"type": "t", "agent": "tally", "session_id": "wait", "data": {"n": 7}})
    _wait_started(redis_client, busy.id)
    app.control.revoke(queued.id)
    with pytest.raises(EventCancelled):
        queued.result(timeout=30)
    busy.result(timeout=30)
    assert StateStore(redis_client, prefix=TEST_PREFIX).load("wait").get("total") is None


def test_client_cancel_of_a_fan_out_cancels_its_tool_calls(start_worker, client, redis_client):
    start_worker(concurrency=8)
    handle = client.emit({"type": "t", "agent": "fanout", "data": {"calls": 3, "seconds": 30}})
    deadline = time.monotonic() + 30
    while redis_client.llen(f"{TEST_PREFIX}:test:toolruns:{handle.id}") < 3:
        assert time.monotonic() < deadline, "the tool calls never started"
        time.sleep(0.05)
    assert handle.cancel() is True
    with pytest.raises(EventCancelled):
        handle.result(timeout=15)
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0


def test_agentflow_cancel_command(start_worker, client, redis_client):
    start_worker(concurrency=4)
    handle = client.emit({"type": "t", "agent": "slow_async", "data": {"seconds": 60}})
    _wait_started(redis_client, handle.id)
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "cancel", handle.id],
                          capture_output=True, text=True, timeout=60, env=cli_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    with pytest.raises(EventCancelled):
        handle.result(timeout=15)


def test_task_signals_fire_with_celerys_arguments(start_worker, redis_client):
    start_worker(concurrency=4, env={"AGENTFLOW_TEST_RECORD_SIGNALS": "1"})
    client = Client()
    try:
        ok = client.emit({"type": "t", "agent": "echo", "data": {"x": 1}})
        ok.result(timeout=30)
        bad = client.emit({"type": "t", "agent": "boom"})
        with pytest.raises(Exception, match="boom"):
            bad.result(timeout=30)
        fan = client.emit({"type": "t", "agent": "fanout", "data": {"calls": 2, "seconds": 0}})
        fan.result(timeout=30)
    finally:
        client.close()
    time.sleep(0.5)
    seen = _signals(redis_client)
    by = lambda kind, task_id: [s for s in seen if s["signal"] == kind and s["id"] == task_id]  # noqa: E731
    for kind in ("task_received", "task_prerun", "task_success"):
        assert by(kind, ok.id), kind
    (prerun,) = by("task_prerun", ok.id)
    assert prerun["task"] == "agentflow.run_event" and prerun["request_id"] == ok.id
    assert [s["state"] for s in by("task_postrun", ok.id)] == ["SUCCESS"]
    (failure,) = by("task_failure", bad.id)
    assert "boom" in failure["exception"] and failure["has_einfo"]
    assert [s["state"] for s in by("task_postrun", bad.id)] == ["FAILURE"]
    # The fan-out: replaced (IGNORED) by its chord; the tool calls and the continuation run.
    assert [s["state"] for s in by("task_postrun", fan.id)] == ["IGNORED", "SUCCESS"]
    tool_runs = [
        s for s in seen if s["signal"] == "task_prerun" and s["task"] == "agentflow.run_tool"
    ]
    assert len(tool_runs) == 2


def test_a_non_redis_broker_is_refused_with_the_reason(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "agentflow", "worker", "--without-mingle"],
        capture_output=True, text=True, timeout=120,
        env=cli_env(AGENTFLOW_BROKER__URL="amqp://guest:guest@127.0.0.1:5672//"),
    )  # fmt: skip
    assert done.returncode != 0
    assert "AgentFlow needs Redis" in done.stdout + done.stderr


def test_a_one_slot_worker_takes_the_next_event_as_soon_as_one_ends(start_worker, client) -> None:
    """A worker with one slot and a prefetch of one takes its next message only once the
    last one's request callbacks (the ack) ran on the consumer's thread. They must not wait
    for the consumer's poll to time out (up to a second each, once): 30 instant events in a
    row finish in well under the 30 s such waits would add up to."""
    start_worker(concurrency=1, extra_args=["--prefetch-multiplier", "1"])
    client.emit({"type": "t", "agent": "echo", "data": {}}).result(timeout=30)  # warm
    started = time.monotonic()
    handles = client.emit_many({"type": "t", "agent": "echo", "data": {"i": i}}
                               for i in range(30))  # fmt: skip
    assert [h.result(timeout=60).output["echo"]["i"] for h in handles] == list(range(30))
    assert time.monotonic() - started < 10
