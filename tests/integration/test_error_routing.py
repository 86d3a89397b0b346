"""Error routing: `[error_routing]` sends a failed event to a handler agent by category;
unrouted failures, and a handler's own failure, go to the DLQ."""

from __future__ import annotations

import json
import time

import pytest
from celery import Celery

from agentflow import Client
from agentflow._redis.queues import RUN_EVENT_TASK, agent_queue
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import EventFailed
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration

ROUTING = {
    "AGENTFLOW_ERROR_ROUTING__AGENT_ERROR": "fixer",
    "AGENTFLOW_ERROR_ROUTING__VALIDATION": "fixer",
}


def _fixed(redis_client, event_id: str, count: int = 1) -> list[dict]:
    """The failures the handler recorded for `event_id` (waits for `count` of them)."""
    key = f"{TEST_PREFIX}:test:fixed:{event_id}"
    deadline = time.monotonic() + 30
    while redis_client.llen(key) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [json.loads(x) for x in redis_client.lrange(key, 0, -1)]


def _handled(redis_client, failure: dict) -> bool:
    """Whether a handler event for `failure`'s category finished successfully (waits)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for key in redis_client.scan_iter("celery-task-meta-*"):
            meta = json.loads(redis_client.get(key) or b"{}")
            output = (meta.get("result") or {}).get("output") if meta.get("status") == "SUCCESS" \
                else None  # fmt: skip
            if isinstance(output, dict) and output.get("handled") == failure["category"]:
                return True
        time.sleep(0.05)
    return False


def test_a_failed_event_goes_to_its_categorys_handler_not_the_dlq(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(env=ROUTING)
    handle = client.emit({"type": "t", "agent": "boom", "session_id": "s9",
                          "data": {"why": "bad input"}})  # fmt: skip
    with pytest.raises(EventFailed, match="routed to agent 'fixer'") as caught:
        handle.result(timeout=30)
    assert "boom: bad input" in caught.value.reason
    [failure] = _fixed(redis_client, handle.id)
    assert failure["category"] == "agent_error"
    assert failure["agent"] == "boom" and failure["event"]["data"] == {"why": "bad input"}
    assert "RuntimeError: boom: bad input" in failure["reason"]
    assert len(DeadLetterQueue(redis_client, TEST_PREFIX)) == 0
    handler_id = caught.value.reason.rsplit("as event ", 1)[1].rstrip(")")
    assert client.result(handler_id, timeout=30).output == {"handled": "agent_error",
                                                            "session": "s9"}  # fmt: skip


def test_an_invalid_event_is_routed_as_validation(start_worker, redis_client, redis_url) -> None:
    start_worker(env=ROUTING)
    plain = Celery("plain-producer", broker=redis_url, backend=redis_url)
    try:
        plain.send_task(RUN_EVENT_TASK, args=[{"id": "bad-1", "type": "t", "data": [1, 2]}],
                        queue=agent_queue("echo"))  # fmt: skip
    finally:
        plain.close()
    [failure] = _fixed(redis_client, "bad-1")
    assert failure["category"] == "validation" and "data" in failure["reason"]
    assert _handled(redis_client, failure)  # the handler finished (it did not fail)
    assert [e.reason for e in DeadLetterQueue(redis_client, TEST_PREFIX).list()] == []


def test_unrouted_failures_and_a_handlers_own_failure_are_dead_lettered(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(env=ROUTING)
    timed_out = client.emit({"type": "t", "agent": "nap"})  # timeout: no handler named
    looping = client.emit({"type": "t", "agent": "boom", "data": {"fixer_fails": True}})
    for handle in (timed_out, looping):
        with pytest.raises(EventFailed):
            handle.result(timeout=30)
    assert len(_fixed(redis_client, looping.id)) == 1  # the handler ran once, then failed
    dlq = DeadLetterQueue(redis_client, TEST_PREFIX)
    deadline = time.monotonic() + 30
    while len(dlq) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = {(e.event or {}).get("type"): e for e in dlq.list()}
    assert set(entries) == {"t", "agentflow.failure"}
    assert "timed out" in entries["t"].reason
    assert "the handler failed too" in entries["agentflow.failure"].reason
    time.sleep(1)  # nothing more arrives: the handler's failure was not routed again
    assert len(_fixed(redis_client, looping.id)) == 1 and len(dlq) == 2
