"""The Redis ACL in docs/security.md: workers and producers do their work, and no more.

The users are taken verbatim from the documented `users.acl` block and loaded into a private
redis-server. Any command AgentFlow runs that the ACL denies shows in ``ACL LOG``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agentflow._redis.doorbell import QUEUES_KEY
from agentflow._redis.keys import Keys
from agentflow._redis.scripts import Script
from agentflow.mock_llm import MockServer
from tests.agents_later import LATER_MODULES
from tests.conftest import ROOT, TEST_ENV, WorkerProcess
from tests.integration.redis_server import private_redis

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "security.md"
MARKER = "<!-- users.acl:"
PASSWORDS = {"worker": "worker-pw-for-tests", "producer": "producer-pw-for-tests"}
KEYS = Keys("agentflow")  # the documented ACL is written for the default key prefix
QUEUE = "agentflow.agent.echo"
DOORBELL = "agentflow.wake:" + QUEUE


def documented_acl() -> str:
    """The users.acl block of docs/security.md, with the test passwords' hashes put in."""
    text = DOC.read_text()
    block = re.search(r"```\w*\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None, "no users.acl block after the marker in docs/security.md"
    acl = block.group(1)
    for role, password in PASSWORDS.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        acl = acl.replace(f"<{role}-password-sha256>", digest)
    assert "<" not in acl, acl
    return acl


@pytest.fixture(scope="module")
def acl_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Redis with the documented users (its `default` user stays the admin)."""
    directory = tmp_path_factory.mktemp("acl-redis")
    (directory / "users.acl").write_text("user default on nopass ~* &* +@all\n" + documented_acl())
    with private_redis(directory, "--aclfile", str(directory / "users.acl")) as port:
        yield port


@pytest.fixture
def admin(acl_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=acl_port)
    client.flushall()
    client.acl_log_reset()
    yield client
    client.close()


def _url(port: int, role: str) -> str:
    return f"redis://agentflow-{role}:{PASSWORDS[role]}@127.0.0.1:{port}/0"


@pytest.fixture
def worker(acl_port: int, admin: redis.Redis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(_url(acl_port, "worker"))
    yield client
    client.close()


@pytest.fixture
def producer(acl_port: int, admin: redis.Redis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(_url(acl_port, "producer"))
    yield client
    client.close()


def _denials(admin: redis.Redis) -> list[str]:
    return [f"{e['username']}: {e['reason']} {e['object']!r} ({e['context']})"
            for e in admin.acl_log()]  # fmt: skip


def _envelope(tag: str) -> str:
    return json.dumps({"body": "W10=", "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": {},
                       "properties": {"delivery_tag": tag, "body_encoding": "base64",
                                      "delivery_info": {"exchange": "", "routing_key": QUEUE}}})  # fmt: skip


def _admit(client: redis.Redis, event_id: str) -> Any:
    now = time.time()
    return Script("admit")(client, [KEYS.inflight, QUEUE, DOORBELL, QUEUES_KEY],
                           [now, now + 60, 100, 100, 1, event_id, _envelope(event_id), 16])  # fmt: skip


def test_worker_runs_every_script_with_its_keys(worker: redis.Redis, admin: redis.Redis) -> None:
    assert _admit(worker, "e1") == [1, 0, 0]  # a replay from the dead-letter queue
    admin.lpush(QUEUE, "not a kombu envelope")
    malformed = ["unacked.malformed", "unacked_index.malformed", "unacked.malformed.seq"]
    fetched = Script("fetch")(worker, ["unacked", "unacked_index", *malformed],
                              ["\x06\x16", "agentflow.wake:", 1, "0", 1, QUEUE, 1,
                               time.time(), 16])  # fmt: skip
    assert fetched[0] == 1, fetched  # the queue is drained
    kinds = fetched[1::4]
    assert sorted(kinds) == [1, 2], fetched  # one message, one malformed item
    assert admin.hlen("unacked") == 1
    tag = next(t.decode() for k, t in zip(kinds, fetched[3::4], strict=True) if k == 2)
    assert Script("restore_malformed")(worker, malformed[:2], ["tag", tag, 1]) == 1

    begin = Script("begin")
    assert begin(worker, [KEYS.done("e1"), KEYS.claim("e1"), KEYS.deliveries("e1", 0),
                          KEYS.cancel("e1")], ["run-1", 30, 600]) == [0, 1]  # fmt: skip
    assert Script("renew")(worker, [KEYS.claim("e1")], [30, "run-1"]) == 1
    meta = "celery-task-meta-e1"
    finished = Script("finish")(
        worker,
        [KEYS.done("e1"), KEYS.claim("e1"), KEYS.inflight, "agentflow:state:s1", meta,
         "unacked", "unacked_index", KEYS.cancel("e1"), QUEUES_KEY, QUEUE, DOORBELL],
        ['{"ok":1}', 60, "e1", 60, '{"status":"SUCCESS","result":', "}", 60, "e1", "run-1",
         1, time.time() + 60, 16, "e1-next", _envelope("e1-next"),  # one chained event
         1, "k", '"v"', 0, 0],
    )  # fmt: skip
    assert finished == [0]
    # Without session state or kombu's record: the empty key names stand for "none".
    assert begin(worker, [KEYS.done("e2"), KEYS.claim("e2"), KEYS.deliveries("e2", 0),
                          KEYS.cancel("e2")], ["run-2", 30, 600]) == [0, 1]  # fmt: skip
    assert Script("finish")(
        worker,
        [KEYS.done("e2"), KEYS.claim("e2"), KEYS.inflight, "", "", "", "", KEYS.cancel("e2"),
         QUEUES_KEY],
        ["{}", 60, "e2", 60, "", "", 60, "", "run-2", 0, 0, 16, 0, 0, 0],
    ) == [0]  # fmt: skip
    assert Script("release")(worker, [KEYS.claim("e3"), KEYS.inflight], ["e3", "t3"]) == 1
    assert admin.get(meta) == b'{"status":"SUCCESS","result":{"ok":1}}'
    assert any(b"e1-next" in m for m in admin.lrange(QUEUE, 0, -1))  # chained with the result
    slots, parked = KEYS.tenant_slots("t1"), KEYS.tenant_parked("t1")
    admin.rpush(parked, f"e4\n{QUEUE}\n{_envelope('e4')}")
    assert Script("tenant_release")(worker, [slots, parked, QUEUES_KEY],
                                    ["e3", time.time(), 1, time.time() + 60,
                                     "agentflow.wake:", 16]) == 1  # fmt: skip
    assert Script("agent_gate")(worker, [KEYS.agent_rate("a"), KEYS.agent_slots("a")],
                                [time.time(), 5, "e5", 2, time.time() + 60]) == b"0"  # fmt: skip
    assert Script("trace")(worker, ["agentflow:trace:e1", "agentflow:trace:session:s1"],
                           ["[]", 60, "e1"]) == 1  # fmt: skip
    assert _denials(admin) == []


def test_worker_waits_on_doorbells_and_publishes_results(
    worker: redis.Redis, producer: redis.Redis, admin: redis.Redis
) -> None:
    assert worker.brpop([DOORBELL], timeout=0.1) is None
    _admit(producer, "e1")  # rings the doorbell
    assert worker.brpop([DOORBELL], timeout=5) is not None
    channel = "celery-task-meta-e1"
    pubsub = producer.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    assert worker.publish(channel, "done") == 1
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == b"done"
    assert _denials(admin) == []


@pytest.mark.parametrize(
    "command",
    [
        ("DEL", QUEUE),
        ("UNLINK", QUEUE),
        ("RPOP", QUEUE),
        ("LRANGE", QUEUE, 0, -1),
        ("LTRIM", QUEUE, 0, 0),
        ("SET", QUEUE, "x"),
        ("HGETALL", "unacked"),
        ("ZRANGE", "unacked_index", 0, -1),
        ("SET", "celery-task-meta-e1", "forged"),
        ("SET", KEYS.done("e1"), "forged"),
        ("EVAL", "return redis.call('DEL', KEYS[1])", 1, QUEUE),
        ("EVAL", "return redis.call('HGETALL', 'unacked')", 0),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
    ],
    ids=lambda c: " ".join(map(str, c[:2])),
)
def test_producer_cannot_touch_what_it_does_not_need(
    producer: redis.Redis, admin: redis.Redis, command: tuple[Any, ...]
) -> None:
    admin.lpush(QUEUE, "queued")
    admin.hset("unacked", "tag", "held")
    with pytest.raises(redis.ResponseError) as info:
        producer.execute_command(*command)
    # NOPERM, or its wording inside a script ("can't access ..." / "can't run ...").
    assert re.search(r"permission|can't (access|run)", str(info.value)), info.value
    assert admin.lrange(QUEUE, 0, -1) == [b"queued"]


def test_producer_admits_events(producer: redis.Redis, admin: redis.Redis) -> None:
    assert _admit(producer, "e1") == [1, 0, 0]
    assert admin.llen(QUEUE) == 1 and admin.zcard(KEYS.inflight) == 1
    assert _denials(admin) == []


def test_producer_admits_and_parks_a_capped_tenants_events(producer: redis.Redis,
                                                           admin: redis.Redis) -> None:  # fmt: skip
    now = time.time()
    slots, parked = KEYS.tenant_slots("t1"), KEYS.tenant_parked("t1")
    reply = Script("admit")(producer, [KEYS.inflight, QUEUE, DOORBELL, QUEUES_KEY, slots, parked],
                            [now, now + 60, 100, 100, 2, "e1", _envelope("e1"), "e2",
                             _envelope("e2"), 16, 1])  # fmt: skip
    assert reply == [2, 0, 0]
    assert admin.llen(QUEUE) == 1 and admin.llen(parked) == 1 and admin.zcard(slots) == 1
    assert _denials(admin) == []


PRODUCER_SCRIPT = """
import json, time
from agentflow import Client, EventFailed
from agentflow.errors import EventCancelled
from agentflow.state import StateStore

client = Client()
out = {}
handle = client.emit({"type": "t", "agent": "echo", "session_id": "s1", "data": {"note": "hi"}})
out["echo"] = handle.result(timeout=60).output
out["state"] = dict(StateStore(client.redis, prefix="agentflow").load("s1"))
handle = client.emit({"type": "chat", "agent": "chat", "data": {"prompt": "hello", "stream": True}})
out["streamed"] = "".join(str(item) for item in handle.stream(timeout=60))
out["chat"] = handle.result(timeout=60).output
handle = client.emit({"type": "t", "agent": "sleepy", "data": {"seconds": 30}})
time.sleep(2)
out["cancel"] = client.cancel(handle.id)
try:
    handle.result(timeout=60)
except EventCancelled:
    out["cancelled"] = True
handle = client.emit({"type": "t", "agent": "boom"})
try:
    handle.result(timeout=60)
except EventFailed as exc:
    out["failed"] = str(exc)
handle = client.emit({"type": "t", "agent": "stamp", "data": {"k": 1}}, delay=0.5)
out["delayed"] = handle.result(timeout=60).output["data"]
later = client.emit({"type": "t", "agent": "stamp"}, delay="1d")
out["cancel_delayed"] = client.cancel(later.id)
try:
    later.result(timeout=60)
except EventCancelled:
    out["delayed_cancelled"] = True
for agent, signal in (("approver", "approval"), ("gatekeeper", "open")):
    waiting = client.emit({"type": "t", "agent": agent, "data": {"timeout": 3600}})
    while client.state(waiting.id) != "WAITING":
        time.sleep(0.05)
    if agent == "approver":
        out["signalled"] = client.signal(waiting.id, signal, "ok")
        out["resumed"] = waiting.result(timeout=60).output["payload"]
    else:
        out["cancel_waiting"] = client.cancel(waiting.id)
        try:
            waiting.result(timeout=60)
        except EventCancelled:
            out["waiting_cancelled"] = True
client.close()
print(json.dumps(out))
"""


def test_worker_and_producer_run_events_without_a_denial(
    acl_port: int, admin: redis.Redis, mock_llm: MockServer, tmp_path: Path
) -> None:
    common = {**TEST_ENV, "AGENTFLOW_BROKER__KEY_PREFIX": "agentflow",
              "AGENTFLOW_AGENTS__MODULES": LATER_MODULES,
              "AGENTFLOW_LLM__PROVIDER": "openai", "AGENTFLOW_LLM__OPENAI__API_KEY": "mock",
              "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1"}  # fmt: skip
    worker = WorkerProcess(
        [sys.executable, "-m", "celery", "-A", "agentflow", "worker", "-c", "4", "-l", "INFO",
         "-n", f"acl-{os.getpid()}@%h"],
        {**os.environ, **common, "AGENTFLOW_BROKER__URL": _url(acl_port, "worker")},
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        worker.wait_ready(timeout=120)
        done = subprocess.run(
            [sys.executable, "-c", PRODUCER_SCRIPT], capture_output=True, text=True,
            timeout=300, cwd=str(ROOT),
            env={**os.environ, **common, "AGENTFLOW_BROKER__URL": _url(acl_port, "producer")},
        )  # fmt: skip
    finally:
        worker.stop()
    assert done.returncode == 0, f"{done.stderr}\n--- worker log:\n{worker.log()[-5000:]}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["echo"] == {"echo": {"note": "hi"}, "type": "t"}
    assert out["state"]["events"] == 1
    assert out["streamed"] and out["chat"]["content"]
    assert out["cancel"] is True and out["cancelled"] is True
    assert "boom" in out["failed"]
    assert out["delayed"] == {"k": 1}
    assert out["cancel_delayed"] is True and out["delayed_cancelled"] is True
    assert out["signalled"] is True and out["resumed"] == "ok"
    assert out["cancel_waiting"] is True and out["waiting_cancelled"] is True
    assert admin.llen("agentflow:dlq") == 1
    assert _denials(admin) == [], worker.log()[-5000:]
