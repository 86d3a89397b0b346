"""Session state under concurrency, backpressure bounds, at-least-once with one result."""

from __future__ import annotations

import time

import pytest

from agentflow import BackpressureError, Client, load_settings
from agentflow._redis.queues import agent_queue
from agentflow.state import StateStore
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


def test_concurrent_events_on_one_session_lose_no_update(start_worker, client, redis_client):
    start_worker(concurrency=8)
    start_worker(concurrency=8)
    handles = client.emit_many(
        {"type": "t", "agent": "tally", "session_id": "shared", "data": {"n": 2}}
        for _ in range(300)
    )
    for h in handles:
        h.result(timeout=60)
    state = StateStore(redis_client, prefix=TEST_PREFIX).load("shared")
    assert state["total"] == 600
    assert sum(1 for k in state if k.startswith("seen:")) == 300
    ttl = redis_client.ttl(StateStore(redis_client, prefix=TEST_PREFIX).key("shared"))
    assert 0 < ttl <= 3600  # [memory] state_cache_ttl


def test_event_buffer_size_bounds_queued_events(redis_client):
    client = Client(
        settings=load_settings(runner={"event_buffer_size": 5, "backpressure": "error"})
    )
    try:
        with pytest.raises(BackpressureError) as info:
            client.emit_many({"type": "t", "agent": "echo"} for _ in range(8))
        assert info.value.sent == 5
        assert "event_buffer_size=5" in str(info.value)
        assert redis_client.llen(agent_queue("echo")) == 5
        # Other agents have their own buffer.
        client.emit({"type": "t", "agent": "tally"})
    finally:
        client.close()


def test_max_concurrent_events_bounds_events_in_flight(redis_client):
    client = Client(
        settings=load_settings(runner={"max_concurrent_events": 3, "backpressure": "error"})
    )
    try:
        client.emit_many([{"type": "t", "agent": "echo"}, {"type": "t", "agent": "tally"}])
        with pytest.raises(BackpressureError, match="max_concurrent_events=3") as info:
            client.emit_many({"type": "t", "agent": "echo"} for _ in range(3))
        assert info.value.sent == 1
    finally:
        client.close()


def test_blocking_producer_waits_for_room_then_sends(start_worker, redis_client):
    settings = load_settings(runner={"max_concurrent_events": 4, "backpressure": "block",
                                     "backpressure_timeout": "30s"})  # fmt: skip
    client = Client(settings=settings)
    try:
        client.emit_many({"type": "t", "agent": "sleepy", "data": {"seconds": 0.2}}
                         for _ in range(4))  # fmt: skip
        with pytest.raises(BackpressureError):
            client.emit({"type": "t", "agent": "echo"}, timeout=0.3)
        start_worker(concurrency=4)
        # Blocks until the worker finishes events, then goes through.
        handles = client.emit_many({"type": "t", "agent": "echo"} for _ in range(10))
        assert all(h.result(timeout=30).agent == "echo" for h in handles)
    finally:
        client.close()


def test_sigkill_mid_event_completes_elsewhere_with_one_result(start_worker, client, redis_client):
    env = {"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "4s", "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "10s"}
    victim = start_worker(concurrency=2, env=env)
    handle = client.emit({"type": "t", "agent": "sleepy", "data": {"seconds": 2},
                          "session_id": "kill"})  # fmt: skip
    started_key = f"{TEST_PREFIX}:test:started:{handle.id}"
    deadline = time.monotonic() + 30
    while not redis_client.llen(started_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.lrange(started_key, 0, -1) == [str(victim.pid).encode()]
    victim.kill()  # SIGKILL, mid-event: the message is unacked
    survivor = start_worker(concurrency=2, env=env)
    result = handle.result(timeout=90)
    assert result.output["pid"] == survivor.pid
    runs = [int(p) for p in redis_client.lrange(started_key, 0, -1)]
    assert runs[0] == victim.pid and survivor.pid in runs
    # Nothing left behind: no queued copy, nothing in the DLQ.
    time.sleep(1)
    assert redis_client.llen(agent_queue("sleepy")) == 0
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0


def test_sigkill_after_a_batched_pop_loses_none_of_the_batch(start_worker, client, redis_client):
    """A worker takes several queued messages in one wake-up (BRPOP, then RPOP with a count)
    and records them unacked in one transaction; killed, every one of them is redelivered."""
    env = {"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "4s", "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "10s"}
    handles = client.emit_many([{"type": "t", "agent": "sleepy", "data": {"seconds": 2},
                                 "session_id": f"batch-{i}"} for i in range(12)])  # fmt: skip
    victim = start_worker(concurrency=4, env=env)
    deadline = time.monotonic() + 30
    while redis_client.llen(agent_queue("sleepy")) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert redis_client.hlen("unacked") >= 2  # more than one message taken and not yet acked
    victim.kill()
    survivor = start_worker(concurrency=12, env=env)
    results = [h.result(timeout=90) for h in handles]
    assert {r.output["pid"] for r in results} <= {victim.pid, survivor.pid}
    assert survivor.pid in {r.output["pid"] for r in results}
    time.sleep(1)
    assert redis_client.llen(agent_queue("sleepy")) == 0
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0


def test_idempotency_key_gives_a_single_result(start_worker, client, redis_client):
    start_worker(concurrency=4)
    first = client.emit({"type": "t", "agent": "tally", "session_id": "idem",
                         "idempotency_key": "order-42", "data": {"n": 5}})  # fmt: skip
    r1 = first.result(timeout=30)
    second = client.emit({"type": "t", "agent": "tally", "session_id": "idem",
                          "idempotency_key": "order-42", "data": {"n": 5}})  # fmt: skip
    r2 = second.result(timeout=30)
    assert r2.event_id == r1.event_id == first.id
    assert StateStore(redis_client, prefix=TEST_PREFIX).load("idem")["total"] == 5


def test_an_agent_longer_than_the_visibility_timeout_runs_once(start_worker, client, redis_client):
    """`long_wait` may run 120 s (its own timeout), far past event_timeout and the
    visibility timeout: its worker renews the message and the claim while it runs, so no
    second worker starts it meanwhile."""
    env = {"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "2s", "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "10s"}
    first = start_worker(concurrency=2, env=env)
    start_worker(concurrency=2, env=env)
    handle = client.emit({"type": "t", "agent": "long_wait", "data": {"seconds": 25}})
    assert handle.result(timeout=90).error is None
    assert first.pid  # both workers were up the whole time
    runs = redis_client.lrange(f"{TEST_PREFIX}:test:started:{handle.id}", 0, -1)
    assert len(runs) == 1, runs


def test_a_raised_setting_is_said_in_the_log(start_worker):
    worker = start_worker(env={"AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "3s"})
    assert "visibility_timeout: raising 3s to 10s" in worker.log()
    assert "raising Celery's time limit from 30s to 120s to cover agent 'long_wait'" in worker.log()
