"""No input kills a worker: whatever lands on a queue ends in the dead-letter queue with its
reason, and the workers that took it keep serving.

Hypothesis builds queue items of every shape a hostile or careless producer could push —
bytes that are not JSON, JSON that is not an envelope, envelopes whose headers have the
wrong types (``id`` or ``task`` a list), bodies that are not ``[args, kwargs, embed]``,
bodies that are not base64 or use an unknown ``body_encoding``, JSON nested 10,000 deep,
events that do not validate — and pushes them onto real workers' queues. Every item must
reach the DLQ, no worker may exit, and healthy events must still succeed afterwards.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow import DeadLetterQueue
from agentflow._redis.queues import agent_queue
from tests.conftest import TEST_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

QUEUES = [agent_queue("echo"), agent_queue("ledger"), "agentflow.tools", "agentflow.default"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
not_str = json_values.filter(lambda v: not isinstance(v, str) or v == "")


def _envelope(headers: Any, body: Any, encoding: Any = "base64",
              content_type: str = "application/json") -> bytes:  # fmt: skip
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": content_type,
        "headers": headers,
        "properties": {"delivery_info": {"exchange": "", "routing_key": "q"},
                       "delivery_tag": uuid.uuid4().hex, "body_encoding": encoding,
                       "priority": 0, "delivery_mode": 2},
    }).encode()  # fmt: skip


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _headers(**over: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "agentflow.run_event", "id": uuid.uuid4().hex, **over}


bad_items = st.one_of(
    st.binary(max_size=200).filter(lambda b: not b.strip().startswith((b"{", b"["))),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 10_000 + b"]" * 10_000),
    st.just(b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
    st.just(json.dumps({"type": "hand", "agent": "echo"}).encode()),
    # wrong header types
    st.sampled_from(["id", "task", "retries", "timelimit", "root_id", "eta", "expires"]).flatmap(
        lambda field: not_str.map(
            lambda v: _envelope(_headers(**{field: v}), _b64([[{"type": "t"}], {}, {}]))
        )
    ),
    st.just(_envelope(["not", "a", "dict"], _b64([[{"type": "t"}], {}, {}]))),
    # bodies that are not [args, kwargs, embed]
    json_values.filter(lambda v: not (isinstance(v, list) and len(v) == 3)).map(
        lambda v: _envelope(_headers(), _b64(v))
    ),
    st.just(_envelope(_headers(), _b64("hello"))),
    st.just(_envelope(_headers(), _b64({"a": 1}))),
    st.just(_envelope(_headers(), "!!! not base64 !!!")),
    st.sampled_from(["zz", "rot13", "", 5]).map(lambda enc: _envelope(_headers(), "abc", enc)),
    st.just(_envelope(_headers(), _b64([[{"type": "t"}], {}, {}]), content_type="text/x-wat")),
    # events that do not validate, or name an agent nobody has
    json_values.map(
        lambda data: _envelope(
            _headers(), _b64([[{"type": "t", "agent": "echo", "data": [data]}], {}, {}])
        )
    ),
    st.just(_envelope(_headers(), _b64([[{"type": "t", "agent": "nobody-here"}], {}, {}]))),
    st.just(_envelope(_headers(), _b64([[{"agent": "echo"}], {}, {}]))),
)


@pytest.fixture
def workers(start_worker):
    return [start_worker(concurrency=8), start_worker(concurrency=8)]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=st.lists(st.tuples(bad_items, st.sampled_from(QUEUES)), min_size=1, max_size=6))
def test_every_bad_item_is_dead_lettered_and_no_worker_dies(items, workers, redis_client,
                                                             client):  # fmt: skip
    dlq = DeadLetterQueue(redis_client, TEST_PREFIX)
    before = len(dlq)
    for item, queue in items:
        redis_client.lpush(queue, item)
    deadline = time.monotonic() + 60
    while len(dlq) < before + len(items) and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = dlq.list(limit=1000)[before:]
    assert len(entries) == len(items), [e.reason for e in entries]
    assert all(e.reason for e in entries)
    for worker in workers:
        assert worker.proc.poll() is None, worker.log()[-3000:]
    # ... and they still serve.
    handle = client.emit({"type": "t", "agent": "echo", "data": {"ok": True}})
    assert handle.result(timeout=30).output["echo"] == {"ok": True}
    for queue in QUEUES:
        assert redis_client.llen(queue) == 0
