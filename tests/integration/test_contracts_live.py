"""Contract tests that need a live Redis (see docs/internals.md and tests/unit/test_contracts.py).

They run kombu's and Celery's own code against the suite's Redis, next to AgentFlow's, and
fail when an upgrade changes what AgentFlow's transport, chord handling or result waiter
rely on. No worker process: kombu's connection and Celery's backend are driven directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, states
from celery.app.task import Context
from kombu import Connection, Exchange, Queue

from agentflow._redis.messages import encode_body, envelope
from agentflow._worker.trace import chord_waiting
from agentflow.client._results import ResultWaiter

pytestmark = pytest.mark.integration

QUEUE = "contracts.q"
TRANSPORT = "agentflow._redis.transport:Transport"


@pytest.fixture
def kombu_conn(redis_url: str, redis_client: redis.Redis) -> Iterator[Connection]:
    """A kombu connection on AgentFlow's transport (the suite's Redis, emptied)."""
    conn = Connection(redis_url, transport=TRANSPORT,
                      transport_options={"visibility_timeout": 10})  # fmt: skip
    yield conn
    conn.release()


def _push(client: redis.Redis, n: int = 1) -> None:
    """LPUSH `n` task messages as AgentFlow's producers write them."""
    for i in range(n):
        item = envelope({"id": f"m{i}", "task": "t"}, {"correlation_id": f"m{i}", "reply_to": ""},
                        encode_body([i], {}, {}), QUEUE)  # fmt: skip
        client.lpush(QUEUE, item)


def _record(client: redis.Redis, tag: str) -> Any:
    raw = client.hget("unacked", tag)
    return json.loads(raw) if raw is not None else None


def test_fetched_messages_are_recorded_and_restored_by_kombu(
    kombu_conn: Connection, redis_client: redis.Redis
) -> None:
    """Guards agentflow/_redis/lua/fetch.lua and transport.QoS: the fetch writes kombu's
    unacked record (``unacked`` hash ``[payload, "", queue]`` + ``unacked_index`` score);
    kombu's ``restore_by_tag`` and its visibility sweep (``restore_visible``, wrapped by
    AgentFlow's QoS) put such a record back on its queue; an ack removes it."""
    channel = kombu_conn.channel()
    try:
        _push(redis_client)
        message = channel.basic_get(QUEUE)
        assert message is not None and json.loads(message.body) == [[0], {}, {}]
        tag = message.delivery_tag
        record = _record(redis_client, tag)
        assert record is not None, "the fetch did not write kombu's unacked record"
        # The record keeps the item as it was pushed; the fetch gives it a tag of its own.
        assert record[1:] == ["", QUEUE] and tag.startswith("f.")
        assert redis_client.zscore("unacked_index", tag) is not None
        assert tag in channel.qos._delivered, "kombu's QoS does not hold the message"

        channel.qos.restore_by_tag(tag)
        assert redis_client.llen(QUEUE) == 1, "kombu did not restore the fetch's record"
        restored = json.loads(redis_client.lindex(QUEUE, 0))
        assert restored["properties"]["delivery_info"]["redelivered"] is True
        assert _record(redis_client, tag) is None
        channel.qos._delivered.pop(tag, None)

        again = channel.basic_get(QUEUE)
        assert again is not None
        redis_client.zadd("unacked_index", {again.delivery_tag: time.time() - 3600})
        channel.qos.restore_visible(num=10, interval=1)
        assert redis_client.llen(QUEUE) == 1, "kombu's visibility sweep did not restore it"
        channel.qos._delivered.pop(again.delivery_tag, None)

        last = channel.basic_get(QUEUE)
        assert last is not None
        last.ack()
        assert _record(redis_client, last.delivery_tag) is None, "the ack left the record"
        assert redis_client.zscore("unacked_index", last.delivery_tag) is None
    finally:
        channel.close()


def test_a_consumer_receives_through_kombus_poller(
    kombu_conn: Connection, redis_client: redis.Redis
) -> None:
    """Guards transport.Channel._brpop_start/_brpop_read/_put: kombu's poller starts and
    reads the fetch through the BRPOP hooks, delivers through ``connection._deliver`` and
    records the message in ``qos._delivered``; kombu's producer pushes through ``_put``
    (which rings the queue's doorbell)."""
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((body, message))

    with kombu_conn.Consumer(queue, callbacks=[on_message], accept=["json"]) as consumer:
        kombu_conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=QUEUE,
                                      declare=[queue], serializer="json")  # fmt: skip
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            try:
                kombu_conn.drain_events(timeout=1)
            except TimeoutError:
                continue
        assert got, "no message came through kombu's poller and AgentFlow's fetch"
        (body, message) = got[0]
        assert body == {"n": 1}
        qos = consumer.channel.qos
        assert message.delivery_tag in qos._delivered
        record = _record(redis_client, message.delivery_tag)
        assert record is not None and record[2] == QUEUE
        message.ack()
        assert _record(redis_client, message.delivery_tag) is None


@pytest.fixture
def chord_app(redis_url: str, redis_client: redis.Redis) -> Iterator[Celery]:
    """An app whose result backend is the suite's Redis and whose broker is in memory."""
    app = Celery("contracts-live", set_as_current=False, broker="memory://", backend=redis_url)
    app.conf.update(task_serializer="json", result_serializer="json")
    yield app
    app.backend.client.close()


def _sent_bodies(app: Celery, queue: str) -> list[Any]:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        out = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            out.append(message.decode())
        return out


def test_a_member_sends_the_body_once_a_dead_claimers_claim_has_expired(
    chord_app: Celery, redis_client: redis.Redis
) -> None:
    """Guards agentflow/_worker/trace.py chord_waiting and _chord_dispatched: while another
    worker's dispatch claim (``.c``) holds, Celery's ``on_chord_part_return`` counts the
    member but sends nothing, and ``chord_waiting`` says so from ``.s``, ``.t`` and ``.j``;
    once the claim has expired, the same member's retry sends the body exactly once, and
    a later retry is a no-op (the done marker)."""
    backend = chord_app.backend
    body_queue = f"contracts.body.{uuid.uuid4().hex[:6]}"
    body = chord_app.signature("contracts.body", queue=body_queue)
    _sent_bodies(chord_app, body_queue)
    gid = uuid.uuid4().hex
    ctx = Context({"id": uuid.uuid4().hex, "group": gid, "group_index": 0,
                   "chord": dict(body), "task": "agentflow.run_tool"})  # fmt: skip
    redis_client.set(backend.get_key_for_group(gid, ".s"), 1)
    redis_client.set(backend.get_key_for_group(gid, ".c"), "a dead worker", ex=2)

    backend.on_chord_part_return(ctx, states.SUCCESS, {"id": "call"})
    assert _sent_bodies(chord_app, body_queue) == [], "the body was sent under another claim"
    assert chord_waiting(backend, ctx), "chord_waiting misses a complete, unsent chord"

    time.sleep(2.2)
    backend.on_chord_part_return(ctx, states.SUCCESS, {"id": "call"})  # the member's retry
    sent = _sent_bodies(chord_app, body_queue)
    assert len(sent) == 1, f"the body was sent {len(sent)} times after the claim expired"
    assert sent[0][0] == [[{"id": "call"}]], "the member was counted more than once"
    assert not chord_waiting(backend, ctx), "chord_waiting after the body was sent"

    backend.on_chord_part_return(ctx, states.SUCCESS, {"id": "call"})
    assert _sent_bodies(chord_app, body_queue) == [], "a late retry sent the body again"


def _loop_chord(app: Celery, n: int) -> tuple[str, str, list[Context]]:
    """A fan-out chord as the fan-out sends it: its size set, `n` members' requests."""
    from agentflow.tools.fanout import ResumeSignature

    queue = f"contracts.body.{uuid.uuid4().hex[:6]}"
    body = ResumeSignature("agentflow.resume_event", args=("event", {"c": 1}), app=app,
                           queue=queue)  # fmt: skip
    gid = uuid.uuid4().hex
    body.freeze("event-id", group_id=gid, root_id="event-id")
    app.backend.client.set(app.backend.get_key_for_group(gid, ".s"), n)
    members = [Context({"id": uuid.uuid4().hex, "group": gid, "group_index": i,
                        "chord": dict(body), "task": "agentflow.run_tool"})
               for i in range(n)]  # fmt: skip
    return queue, gid, members


def _pushed_bodies(client: redis.Redis, queue: str) -> list[Any]:
    items = client.lrange(queue, 0, -1)
    client.delete(queue)
    return [json.loads(base64.b64decode(json.loads(i)["body"])) for i in items]


def test_members_joined_on_the_loop_send_the_body_once_with_results_in_order(
    chord_app: Celery, redis_client: redis.Redis
) -> None:
    """Guards agentflow/_worker/chord_join.py: three members that join at once (Celery's
    join script on the loop's batch) send the continuation once, with every member's result
    in header order, and leave no chord keys behind but the done marker."""
    from agentflow._worker import chord_join
    from agentflow._worker.runner import reset_runner

    reset_runner()
    queue, gid, members = _loop_chord(chord_app, 3)
    backend = chord_app.backend
    assert all(chord_join.joins_here(backend, m) for m in members)

    async def join_all() -> list[bool]:
        return list(await asyncio.gather(*(
            chord_join.join(backend, m, {"id": f"call-{m.group_index}"})
            for m in reversed(members))))  # fmt: skip

    sent = asyncio.run(join_all())
    assert sent.count(True) == 1, f"the body was sent {sent.count(True)} times"
    bodies = _pushed_bodies(redis_client, queue)
    assert len(bodies) == 1
    args = bodies[0][0]
    assert args[0] == [{"id": "call-0"}, {"id": "call-1"}, {"id": "call-2"}], args[0]
    assert args[1:] == ["event", {"c": 1}]
    assert redis_client.llen(f"agentflow.wake:{queue}") == 1, "the body's doorbell"
    left = [s for s in (".j", ".t", ".s", ".d") if redis_client.exists(
        backend.get_key_for_group(gid, s))]  # fmt: skip
    assert left == [], f"chord keys left: {left}"
    assert redis_client.get(backend.get_key_for_group(gid, ".c")) == b"done"
    assert not asyncio.run(chord_join.join(backend, members[0], {"id": "late"}))
    assert _pushed_bodies(redis_client, queue) == [], "a late copy sent the body again"


def test_a_member_joined_on_the_loop_waits_out_a_dead_claimers_claim(
    chord_app: Celery, redis_client: redis.Redis
) -> None:
    """Guards agentflow/_worker/chord_join.py with trace._chord_dispatched: while another
    worker's claim holds, the join counts the member and sends nothing (the chord reads as
    waiting); once the claim has expired, the member's next join sends the body once."""
    from agentflow._worker import chord_join
    from agentflow._worker.runner import reset_runner

    reset_runner()
    queue, gid, (member,) = _loop_chord(chord_app, 1)
    backend = chord_app.backend
    redis_client.set(backend.get_key_for_group(gid, ".c"), "a dead worker", ex=2)
    assert not asyncio.run(chord_join.join(backend, member, {"id": "call"}))
    assert _pushed_bodies(redis_client, queue) == [], "the body was sent under another claim"
    assert chord_waiting(backend, member), "the chord should read complete and unsent"
    time.sleep(2.2)
    assert asyncio.run(chord_join.join(backend, member, {"id": "call"}))
    bodies = _pushed_bodies(redis_client, queue)
    assert len(bodies) == 1 and bodies[0][0][0] == [{"id": "call"}], bodies
    assert not chord_waiting(backend, member)


def test_the_result_waiter_reads_what_celerys_backend_publishes(
    chord_app: Celery, redis_client: redis.Redis
) -> None:
    """Guards agentflow/client/_results.py ResultWaiter and agentflow/client/_client.py: Celery's Redis backend
    stores a result under ``task_keyprefix + id`` and publishes the same value on the channel
    of that name (lua/finish.lua does the same for AgentFlow's events)."""
    backend = chord_app.backend
    prefix = bytes(backend.task_keyprefix).decode()
    waiter = ResultWaiter(redis_client, lambda task_id: prefix + task_id, "contracts:epoch",
                          lambda epoch: f"contracts:survivors:{epoch}")  # fmt: skip
    try:
        task_id = uuid.uuid4().hex
        future = waiter.future(task_id)
        time.sleep(0.2)  # subscribed, nothing stored yet: the publication must resolve it
        pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(prefix + task_id)
        time.sleep(0.1)
        backend.store_result(task_id, {"output": "o"}, states.SUCCESS)
        meta = future.result(timeout=5)
        assert meta["status"] == "SUCCESS" and meta["result"] == {"output": "o"}
        published = None
        deadline = time.monotonic() + 5
        while published is None and time.monotonic() < deadline:
            published = pubsub.get_message(timeout=0.5)
        assert published is not None, "Celery no longer publishes the result on its key"
        assert published["data"] == redis_client.get(prefix + task_id)
        pubsub.close()
    finally:
        waiter.close()


def test_an_unreadable_record_goes_back_to_its_queue_and_the_sweep_goes_on(
    kombu_conn: Connection, redis_client: redis.Redis
) -> None:
    """Guards transport.QoS.restore_by_tag: the fetch records any item that looks like a
    JSON object; one that is not JSON makes a record kombu's restore cannot read. The sweep
    puts such an item back on its queue (the next worker dead-letters it) and restores the
    readable ones as usual."""
    channel = kombu_conn.channel()
    try:
        redis_client.lpush(QUEUE, b"{not json at all}")
        _push(redis_client)
        first = channel.basic_get(QUEUE)
        second = channel.basic_get(QUEUE)
        assert first is not None and second is not None
        old = time.time() - 3600
        redis_client.zadd("unacked_index", {first.delivery_tag: old, second.delivery_tag: old})
        channel.qos.restore_visible(num=10, interval=1)
        items = redis_client.lrange(QUEUE, 0, -1)
        assert b"{not json at all}" in items and len(items) == 2
        assert redis_client.hlen("unacked") == 0
    finally:
        channel.close()


# == Task events: published from the worker's loop ===============================================
def _subscribe(client: redis.Redis) -> Any:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev*")
    deadline = time.monotonic() + 5
    while not pubsub.get_message(timeout=0.1) and time.monotonic() < deadline:
        pass  # the psubscribe confirmation
    return pubsub


def _published(pubsub: Any, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    out: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + 5
    while len(out) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "pmessage":
            out.append((message["channel"], json.loads(message["data"])))
    return out


def _send_events(dispatcher: Any) -> None:
    dispatcher.send("task-received", uuid="t1", name="agentflow.run_event", args="({},)",
                    kwargs="{}", root_id="t1", parent_id=None, retries=0, eta=None,
                    expires=None)  # fmt: skip
    dispatcher.send("task-started", uuid="t1")
    dispatcher.flush()
    dispatcher.send("worker-heartbeat", freq=2.0, active=1)


@contextlib.contextmanager
def _events_from_a_loop(redis_url: str) -> Iterator[list[bytes]]:
    """Task events published as in a worker: an Outbox on a loop thread with its batch.
    Yields the channels the loop published on."""
    import redis.asyncio as aredis

    from agentflow._redis.script_batch import ScriptBatch
    from agentflow._worker import task_events

    published: list[bytes] = []

    class Recording(ScriptBatch):
        def command(self, *args: Any) -> asyncio.Future[Any]:
            if args[0] == "PUBLISH":
                published.append(args[1].encode())
            return super().command(*args)

    async def make_batch() -> ScriptBatch:
        return Recording(aredis.Redis.from_url(redis_url))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    batch = asyncio.run_coroutine_threadsafe(make_batch(), loop).result(5)
    task_events.attach(loop, lambda: batch)
    try:
        yield published
    finally:
        task_events.detach()
        asyncio.run_coroutine_threadsafe(batch.aclose(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_task_events_from_the_loop_are_what_kombu_publishes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Guards agentflow/_worker/task_events.py: a message the worker's loop publishes has
    kombu's Redis channel names (``Channel._get_publish_topics``) and envelope, and Celery's
    own ``EventReceiver`` (what Flower and ``celery events`` read with) decodes it to the
    events that were sent."""
    from agentflow._worker import task_events

    app = Celery("events-contract", set_as_current=False, broker=redis_url,
                 events="agentflow._worker.task_events:Events")  # fmt: skip
    pubsub = _subscribe(redis_client)
    try:
        with app.connection_for_write() as conn:
            dispatcher = app.events.Dispatcher(conn, hostname="h@x", buffer_group=["task"])
            assert isinstance(dispatcher, task_events.TaskEventDispatcher)
            _send_events(dispatcher)  # no outbox attached: through kombu
            kombu_side = _published(pubsub, 2)
            with _events_from_a_loop(redis_url) as published:
                _send_events(dispatcher)
                loop_side = _published(pubsub, 2)
    finally:
        pubsub.close()
    loop_by_channel, kombu_by_channel = dict(loop_side), dict(kombu_side)
    assert set(loop_by_channel) == set(kombu_by_channel) == {
        b"/0.celeryev/task.multi", b"/0.celeryev/worker.heartbeat"}  # fmt: skip
    assert published == [b"/0.celeryev/task.multi"], "task events went out on the loop"
    for channel, ours in loop_by_channel.items():
        kombus = kombu_by_channel[channel]
        for item in (ours, kombus):
            item["properties"].pop("delivery_tag")
            item.pop("body")
        assert ours == kombus, "the event envelope differs from kombu's"

    received: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": received.append})
        consumer = threading.Thread(target=lambda: receiver.capture(limit=3, timeout=5),
                                    daemon=True)  # fmt: skip
        consumer.start()
        time.sleep(0.5)  # the receiver has subscribed
        with _events_from_a_loop(redis_url), app.connection_for_write() as wconn:
            _send_events(app.events.Dispatcher(wconn, hostname="h@x", buffer_group=["task"]))
            consumer.join(5)
    by_type = {e["type"]: e for e in received}
    assert sorted(by_type) == ["task-received", "task-started", "worker-heartbeat"]
    assert by_type["task-received"]["uuid"] == "t1"
    assert by_type["task-received"]["name"] == "agentflow.run_event"
    assert by_type["task-received"]["hostname"] == "h@x"
    assert by_type["task-received"]["clock"] < by_type["task-started"]["clock"]
