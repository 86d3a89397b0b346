"""Bad input gets a clear error and loses nothing: refused at the producer, or dead-lettered."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from celery import Celery

from agentflow import (
    Client,
    DeadLetterQueue,
    EventFailed,
    InvalidEvent,
    UnknownAgent,
    load_settings,
)
from agentflow._redis.queues import agent_queue
from tests.conftest import TEST_PREFIX, TEST_REDIS_URL, cli_env

pytestmark = pytest.mark.integration


def _dlq(redis_client) -> DeadLetterQueue:
    return DeadLetterQueue(redis_client, TEST_PREFIX)


def _wait_dlq(redis_client, count: int = 1, timeout: float = 30):
    dlq = _dlq(redis_client)
    deadline = time.monotonic() + timeout
    while len(dlq) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = dlq.list()
    assert len(entries) >= count, f"expected {count} DLQ entries, got {entries}"
    return entries


def _plain_celery() -> Celery:
    app = Celery(broker=TEST_REDIS_URL, backend=TEST_REDIS_URL, set_as_current=False)
    app.conf.accept_content = ["json", "pickle"]
    return app


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", *args],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip


def test_producer_refuses_invalid_event_with_validation_error(client: Client, redis_client):
    with pytest.raises(InvalidEvent) as info:
        client.emit({"agent": "echo", "data": "not an object", "colour": "red"})
    message = str(info.value)
    assert "type" in message and "data" in message and "colour" in message
    assert redis_client.llen(agent_queue("echo")) == 0


def test_producer_refuses_unknown_agent(client: Client, redis_client):
    with pytest.raises(UnknownAgent, match="nobody"):
        client.emit({"type": "t", "agent": "nobody"})


def test_producer_refuses_oversized_event(redis_client):
    client = Client(settings=load_settings(runner={"max_event_bytes": 1000}))
    try:
        with pytest.raises(InvalidEvent, match="max_event_bytes"):
            client.emit({"type": "t", "agent": "echo", "data": {"blob": "x" * 5000}})
    finally:
        client.close()


def test_unknown_agent_reaching_a_worker_is_dead_lettered(start_worker, redis_client):
    start_worker()
    app = _plain_celery()
    event = {"id": "ev-unknown", "type": "t", "agent": "nobody"}
    result = app.send_task("agentflow.run_event", args=[event], queue=agent_queue("echo"))
    with pytest.raises(Exception, match="nobody"):
        result.get(timeout=30)
    (entry,) = _wait_dlq(redis_client)
    assert "nobody" in entry.reason and entry.event["id"] == "ev-unknown"


def test_hand_pushed_json_is_dead_lettered_and_replay_runs_it(start_worker, redis_client):
    start_worker()
    event = {"type": "hand", "agent": "echo", "data": {"k": 1}}
    redis_client.lpush(agent_queue("echo"), json.dumps(event))
    (entry,) = _wait_dlq(redis_client)
    assert "not a kombu message envelope" in entry.reason
    assert entry.event == event

    listing = _cli("dlq", "list")
    assert listing.returncode == 0 and entry.id in listing.stdout

    replay = _cli("dlq", "replay", entry.id)
    assert replay.returncode == 0, replay.stderr
    event_id = replay.stdout.split("as event ")[1].split()[0]
    client = Client()
    try:
        assert client.result(event_id, timeout=30).output["echo"] == {"k": 1}
    finally:
        client.close()
    assert len(_dlq(redis_client)) == 0


def test_non_json_item_is_dead_lettered_raw(start_worker, redis_client):
    start_worker()
    redis_client.lpush(agent_queue("echo"), b"\x80\x04 definitely not json")
    (entry,) = _wait_dlq(redis_client)
    assert entry.reason == "queue item is not JSON"
    assert entry.raw and entry.queue == agent_queue("echo")
    # Raw messages cannot be replayed; the entry stays, with a clear message.
    replay = _cli("dlq", "replay", entry.id)
    assert replay.returncode == 1 and "raw message" in replay.stderr
    assert len(_dlq(redis_client)) == 1


def test_pickle_content_type_is_dead_lettered(start_worker, redis_client):
    start_worker()
    app = _plain_celery()
    app.send_task("agentflow.run_event", args=[{"type": "t", "agent": "echo"}],
                  queue=agent_queue("echo"), serializer="pickle")  # fmt: skip
    (entry,) = _wait_dlq(redis_client)
    assert "application/x-python-serialize" in entry.reason
    assert entry.content_type == "application/x-python-serialize"


def test_oversized_message_is_dead_lettered(start_worker, redis_client):
    start_worker(env={"AGENTFLOW_RUNNER__MAX_EVENT_BYTES": "2000"})
    app = _plain_celery()
    event = {"id": "big", "type": "t", "agent": "echo", "data": {"blob": "x" * 10_000}}
    app.send_task("agentflow.run_event", args=[event], queue=agent_queue("echo"))
    (entry,) = _wait_dlq(redis_client)
    assert "exceeds max_event_bytes=2000" in entry.reason
    assert entry.event is not None and entry.event["id"] == "big"


def test_invalid_event_reaching_worker_is_dead_lettered(start_worker, redis_client):
    start_worker()
    app = _plain_celery()
    bad = {"type": "t", "agent": "echo", "data": [1, 2]}
    app.send_task("agentflow.run_event", args=[bad], queue=agent_queue("echo"))
    (entry,) = _wait_dlq(redis_client)
    assert entry.reason.startswith("invalid event: data:")


def test_failing_agent_reports_reason_and_dead_letters(start_worker, client, redis_client):
    start_worker()
    handle = client.emit({"type": "t", "agent": "boom", "data": {"why": "testing"}})
    with pytest.raises(EventFailed, match="boom: testing"):
        handle.result(timeout=30)
    (entry,) = _wait_dlq(redis_client)
    assert "RuntimeError" in entry.reason and entry.event["id"] == handle.id


def test_agent_timeout_on_threads_pool_is_enforced(start_worker, client, redis_client):
    start_worker(env={"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "1s"})
    handle = client.emit({"type": "t", "agent": "sleepy", "data": {"seconds": 5}})
    with pytest.raises(EventFailed, match="timed out after 1s"):
        handle.result(timeout=4)
    (entry,) = _wait_dlq(redis_client)
    assert "timed out" in entry.reason


def test_an_event_for_another_agents_queue_is_dead_lettered(start_worker, redis_client):
    """The queue decides: a worker runs only the agent whose queue an event is on."""
    start_worker()
    app = _plain_celery()
    event = {"id": "ev-wrong-queue", "type": "t", "agent": "tally"}
    app.send_task("agentflow.run_event", args=[event], queue=agent_queue("echo"))
    (entry,) = _wait_dlq(redis_client)
    assert "arrived on agentflow.agent.echo, the queue of agent 'echo'" in entry.reason
    assert entry.event["id"] == "ev-wrong-queue"


def test_an_event_without_agent_runs_the_agent_of_its_queue(start_worker, redis_client):
    start_worker()
    app = _plain_celery()
    result = app.send_task("agentflow.run_event", args=[{"type": "no-route", "data": {"x": 1}}],
                           queue=agent_queue("echo"))  # fmt: skip
    assert result.get(timeout=30)["agent"] == "echo"


def test_events_of_an_agent_no_worker_serves_are_dead_lettered(start_worker, redis_client):
    """An event on the queue of an agent no live worker has announced for
    `[runner] unserved_timeout` goes to the DLQ instead of waiting for ever."""
    start_worker(env={"AGENTFLOW_RUNNER__UNSERVED_TIMEOUT": "2s",
                      "AGENTFLOW_MONITORING__METRICS_INTERVAL": "1s"})  # fmt: skip
    app = _plain_celery()
    event = {"id": "ev-orphan", "type": "t", "agent": "nobody"}
    app.send_task("agentflow.run_event", args=[event], queue=agent_queue("nobody"))
    (entry,) = _wait_dlq(redis_client, timeout=60)
    assert "nobody" in entry.reason and entry.event["id"] == "ev-orphan"
    assert redis_client.llen(agent_queue("nobody")) == 0


def test_an_agent_whose_workers_are_gone_is_dead_lettered_among_many_keys(
    start_worker, client: Client, redis_client
):
    """An agent that was served (the Client accepts it) but whose workers are gone: its
    events reach the DLQ within the unserved timeout also when Redis holds many other keys
    (results, sessions), which a slow sweep of the keyspace would take minutes to reach."""
    redis_client.eval("for i = 1, 300000 do redis.call('SET', 'filler:' .. i, 'x') end", 0)
    redis_client.hset(f"{TEST_PREFIX}:agents", "departed", time.time() - 3600)
    start_worker(env={"AGENTFLOW_RUNNER__UNSERVED_TIMEOUT": "2s",
                      "AGENTFLOW_MONITORING__METRICS_INTERVAL": "1s"})  # fmt: skip
    handle = client.emit({"type": "t", "agent": "departed"})
    (entry,) = _wait_dlq(redis_client, timeout=60)
    assert "departed" in entry.reason and entry.event["id"] == handle.id
    with pytest.raises(EventFailed, match="departed"):
        handle.result(timeout=30)


def test_the_client_refuses_data_that_is_not_json(client: Client, redis_client):
    with pytest.raises(InvalidEvent, match="NaN and Infinity are not JSON"):
        client.emit({"type": "t", "agent": "echo", "data": {"x": float("nan")}})
    assert redis_client.llen(agent_queue("echo")) == 0
