"""kombu's Redis transport, hardened so a hand-pushed item on a queue is dead-lettered, not lost.

kombu pops an item with BRPOP and parses it as a kombu envelope; an item that is not JSON, or
JSON that is not an envelope (someone ran ``LPUSH agentflow.agent.x '{"type": ...}'``), makes
it raise after the item has left Redis. This channel wraps such an item into a valid envelope
whose content type no worker accepts and whose header says why, so Celery's consumer hands it
to AgentFlow's dead-letter queue (see agentflow.workers.consumer).

Selected with Celery's `broker_transport` setting; URLs stay ``redis://``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str

log = logging.getLogger("agentflow.transport")
MALFORMED_CONTENT_TYPE = "application/x-agentflow-malformed"
MALFORMED_HEADER = "agentflow_malformed"


def _is_envelope(value: Any) -> bool:
    properties = value.get("properties") if isinstance(value, dict) else None
    return (
        isinstance(properties, dict)
        and "body" in value
        and isinstance(value.get("headers", {}), dict)
        and properties.get("delivery_tag") is not None
        and isinstance(properties.get("delivery_info"), dict)
    )


def parse_item(item: bytes | str, queue: str) -> dict[str, Any]:
    """The kombu envelope in a queue item, or a stand-in envelope that says what was wrong."""
    text = bytes_to_str(item)
    try:
        value = json.loads(text)
    except ValueError:
        reason = "queue item is not JSON"
    else:
        if _is_envelope(value):
            return dict(value)
        reason = "queue item is JSON but not a kombu message envelope"
    return {
        "body": text,
        "content-encoding": "utf-8",
        "content-type": MALFORMED_CONTENT_TYPE,
        "headers": {MALFORMED_HEADER: reason},
        "properties": {
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_tag": uuid.uuid4().hex,
            "body_encoding": None,
            "priority": 0,
            "delivery_mode": 2,
        },
    }


def _unacked_entry(payload: dict[str, Any], item: bytes | str) -> tuple[Any, str]:
    """(tag, kombu's unacked record ``[payload, exchange, routing_key]`` as JSON), reusing the
    item's own JSON text instead of serializing the parsed payload again."""
    properties = payload["properties"]
    info = properties["delivery_info"]
    tail = json.dumps([info.get("exchange"), info.get("routing_key")])[1:]
    if payload.get("content-type") == MALFORMED_CONTENT_TYPE:
        text = json.dumps(payload)
    else:
        text = bytes_to_str(item)
    return properties["delivery_tag"], "[" + text + "," + tail


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, plus acks for messages already settled in Redis.

    Direct execution removes a finished event's message from kombu's unacked hash and index
    inside its finish script (one round trip for result and ack); :meth:`settled` records
    that, and the ack that follows on the consumer's thread only updates the in-memory
    bookkeeping.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settled: set[Any] = set()
        self._recorded: set[Any] = set()

    def record(self, entries: list[tuple[Any, str]]) -> None:
        """Write the unacked entries of messages about to be delivered, in one transaction.

        ``entries`` are ``(delivery_tag, json_of([payload, exchange, routing_key]))``, what
        kombu's :meth:`append` writes one message at a time; the appends that follow for
        these tags only update the in-memory bookkeeping.
        """
        now = time.time()
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.zadd(self.unacked_index_key, {tag: now for tag, _ in entries})
            pipe.hset(self.unacked_key, mapping=dict(entries))
            pipe.execute()
        self._recorded.update(tag for tag, _ in entries)

    def append(self, message: Any, delivery_tag: Any) -> None:
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
            kombu_virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def settled(self, delivery_tag: Any) -> None:
        """The message's Redis entries are gone already (any thread)."""
        self._settled.add(delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        if delivery_tag in self._settled:
            self._settled.discard(delivery_tag)
            kombu_virtual.QoS.ack(self, delivery_tag)
            return
        super().ack(delivery_tag)

    def settle_keys(self) -> tuple[str, str]:
        """kombu's unacked hash and index, as Redis names them (global key prefix included)."""
        channel = self.channel
        prefix = getattr(channel, "global_keyprefix", "") or ""
        return prefix + channel.unacked_key, prefix + channel.unacked_index_key


class Channel(kombu_redis.Channel):
    """A Redis channel that never loses a malformed queue item, and reuses its ack client.

    kombu builds a new redis-py client object for every ack, reject and QoS append
    (``conn_or_acquire`` without a client); building one costs more CPU than the ack's round
    trip. A redis-py client is thread-safe (each command takes a pooled connection), so one
    per channel and pool serves every ack.
    """

    QoS = QoS
    _shared_client: Any = None
    _no_ack_queues: frozenset[str] = frozenset()
    max_pop = 16
    """Messages taken per wake-up: after BRPOP returns one, up to this many - 1 more are
    popped at once (RPOP with a count) if the prefetch limit leaves room. The batch's
    unacked records (what kombu writes per message) are written in one transaction before
    any is handed to the consumer; if that fails the items go back to the queue."""
    _pop_more_ok = True

    def _pop_more(self, raw_key: bytes) -> list[bytes]:
        if not self._pop_more_ok or self.global_keyprefix:
            return []
        room = self.qos.can_consume_max_estimate()
        extra = (self.max_pop if room is None else min(self.max_pop, room)) - 1
        if extra <= 0:
            return []
        conn = self.client.connection
        try:
            conn.send_command("RPOP", raw_key, extra)
            items = self.client.parse_response(conn, "RPOP")
        except self.connection_errors:
            conn.disconnect()
            raise
        except Exception:  # a Redis older than 6.2 (no RPOP count): one per BRPOP, as kombu
            self._pop_more_ok = False
            return []
        return list(items or [])

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues = self._no_ack_queues | {queue}
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _put_back(self, raw_key: bytes, items: tuple[bytes, ...]) -> None:
        """Return popped items whose unacked records could not be written to the end of
        the queue they came from (the next to be popped), first popped first again."""
        try:
            with self.conn_or_acquire() as client:
                client.rpush(raw_key, *reversed(items))
        except Exception:
            log.error("%d messages taken from %s could not be recorded or put back",
                      len(items), bytes_to_str(raw_key))  # fmt: skip

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            raw_key, item = dest__item
            dest = bytes_to_str(raw_key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            more = self._pop_more(raw_key)
            if not more:
                self.connection._deliver(parse_item(item, dest), dest)
                return True
            items = (item, *more)
            payloads = [parse_item(i, dest) for i in items]
            if dest not in self._no_ack_queues:
                try:
                    self.qos.record([_unacked_entry(p, i)
                                     for p, i in zip(payloads, items, strict=True)])  # fmt: skip
                except BaseException:
                    self._put_back(raw_key, items)
                    raise
            for payload in payloads:
                self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu resets it to None too
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
