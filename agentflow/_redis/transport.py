"""kombu's Redis transport, made so that no message is ever lost and no item kills a worker.

kombu takes a message with BRPOP and only then writes its unacked record: a worker killed
between the two loses the message (the issue's fault runs lost up to 16 per kill). Here a
message leaves its queue only inside one Lua script (``lua/fetch.lua``) that also records it
as unacked, so at every instant it is either queued or recorded, and kombu's restore sweep
brings a dead worker's records back after the visibility timeout.

A script cannot block, so a worker waits on *doorbells*: after a fetch that emptied the
queues (and cleared their doorbells) the channel waits with BRPOP on the queues' doorbell
keys — never on the queues themselves, which would take a message — for at most
``fetch_idle_wait`` seconds. AgentFlow's producers ring the doorbell of the queue they push
to in the same step as the push, so an idle worker wakes at once; a message from any other
producer waits at most that long. Each wait that runs out with nothing to fetch doubles the
next one, up to ``fetch_idle_max`` (a ring or a message resets it): an idle worker polls
Redis every two seconds instead of five times a second. kombu's restore of a dead worker's
messages rings the doorbell too.

While a worker holds a message (running, waiting for a slot or for its ETA) the channel
renews the message's score in kombu's unacked index every ``visibility_timeout / 4``: a live
worker's messages are never redelivered under it, however long they take, and a dead
worker's come back ``visibility_timeout`` after its last renewal.

Items that are not kombu envelopes, and envelopes whose body cannot be decoded, reach the
consumer as a stand-in message whose content type no worker accepts and whose header says
why; Celery's consumer then hands it to AgentFlow's dead-letter queue
(:mod:`agentflow._worker.consumer`), and the item is acked only once it is there.

Selected with Celery's ``broker_transport`` setting; URLs stay ``redis://`` (or
``sentinel://``, with :class:`SentinelTransport`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import NoScriptError

from agentflow import _json
from agentflow._redis.doorbell import QUEUES_KEY, WAKE_PREFIX, ring, wake_key
from agentflow._redis.scripts import Script

log = logging.getLogger("agentflow.transport")
MALFORMED_CONTENT_TYPE = "application/x-agentflow-malformed"
MALFORMED_HEADER = "agentflow_malformed"
MALFORMED_TAG_PREFIX = "malformed."

_FETCH = Script("fetch")
_RESTORE_MALFORMED = Script("restore_malformed")
_RESTORE_UNREADABLE = Script("restore_unreadable")


def _resp(fields: list[Any]) -> bytes:
    """Redis protocol bulk strings for `fields` (str, bytes or numbers), no array header."""
    out = []
    for f in fields:
        b = f if isinstance(f, bytes) else str(f).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def item_text(item: bytes | str) -> str:
    """A queue item as text (undecodable bytes replaced, as kombu reads items)."""
    return str(bytes_to_str(item))


def malformed_reason(item: bytes | str) -> str:
    """Why a queue item is not a kombu message envelope."""
    try:
        json.loads(item)
    except RecursionError:
        return "queue item is JSON nested too deeply to read"
    except ValueError:
        return "queue item is not JSON"
    return "queue item is JSON but not a kombu message envelope"


def stand_in(
    body: str, queue: str, tag: str, reason: str, properties: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An envelope for something that cannot be delivered as it is: no worker accepts its
    content type, and its header says why (the consumer dead-letters it)."""
    props = {
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "delivery_mode": 2,
        **{k: v for k, v in (properties or {}).items() if k in ("priority", "delivery_mode")},
    }
    props["delivery_tag"] = tag
    props["body_encoding"] = None
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": MALFORMED_CONTENT_TYPE,
        "headers": {MALFORMED_HEADER: reason},
        "properties": props,
    }


def is_malformed_tag(tag: Any) -> bool:
    """Whether a delivery tag names an item kept raw in the malformed hash."""
    return isinstance(tag, str) and tag.startswith(MALFORMED_TAG_PREFIX)


class Message(kombu_virtual.Message):
    """kombu's message; a body it cannot decode (an unknown ``body_encoding``, bad base64)
    becomes a stand-in that says so, under the same delivery tag."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel=channel, **kwargs)
        except Exception as exc:
            properties = payload.get("properties") or {}
            info = properties.get("delivery_info") or {}
            encoding = properties.get("body_encoding")
            reason = f"cannot decode the message body (body_encoding {encoding!r}): {exc!r}"
            body = payload.get("body")
            text = body if isinstance(body, str) else json.dumps(body, default=repr)
            replacement = stand_in(text, str(info.get("routing_key") or ""),
                                   str(properties.get("delivery_tag")), reason[:1000])  # fmt: skip
            super().__init__(replacement, channel=channel, **kwargs)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS for messages the fetch script has already recorded.

    - ``append`` writes nothing: the fetch recorded the message when it took it.
    - Malformed items have records of their own (the raw item and its queue).
    - :meth:`touch` renews the index score of every message this channel holds.
    - :meth:`settled`: the asyncio pool removes a finished message's records inside its
      own finish script (one round trip for result and ack); the ack that follows then only
      updates the in-memory bookkeeping.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settled: set[Any] = set()

    @property
    def malformed_key(self) -> str:
        """The hash of raw malformed items (``tag`` → item, ``tag:queue`` → queue)."""
        return str(self.unacked_key) + ".malformed"

    @property
    def malformed_index_key(self) -> str:
        """The malformed items' index (tag → time taken), swept like kombu's."""
        return str(self.unacked_index_key) + ".malformed"

    def append(self, message: Any, delivery_tag: Any) -> None:
        kombu_virtual.QoS.append(self, message, delivery_tag)

    def settled(self, delivery_tag: Any) -> None:
        """The message's Redis records are gone already (any thread)."""
        self._settled.add(delivery_tag)

    def _after_close(self, delivery_tag: Any, what: str) -> bool:
        """True when the channel has closed: every message it held was put back (or kept
        for the next connection) as it closed, so a late ack or reject has nothing to do
        (and no connection to do it on)."""
        if not self.channel.closed:
            return False
        log.debug("%s of %s after its channel closed: it was put back then", what, delivery_tag)
        self._delivered.pop(delivery_tag, None)
        self._settled.discard(delivery_tag)
        return True

    def ack(self, delivery_tag: Any) -> None:
        if self._after_close(delivery_tag, "ack"):
            return
        if delivery_tag in self._settled:
            self._settled.discard(delivery_tag)
        elif is_malformed_tag(delivery_tag):
            self._forget_malformed(delivery_tag)
        else:
            self._remove_from_indices(delivery_tag).execute()
        kombu_virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._after_close(delivery_tag, "reject"):
            return
        if is_malformed_tag(delivery_tag):
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._forget_malformed(delivery_tag)
            kombu_virtual.QoS.ack(self, delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)

    def _forget_malformed(self, tag: str) -> None:
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.hdel(self.malformed_key, tag, tag + ":queue")
            pipe.zrem(self.malformed_index_key, tag)
            pipe.execute()

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        if not is_malformed_tag(tag):
            try:
                super().restore_by_tag(tag, client=client, leftmost=leftmost)
                return None
            except ValueError:  # a record kombu cannot read: not JSON after all
                with self.channel.conn_or_acquire(client) as conn:
                    _RESTORE_UNREADABLE(conn, [self.unacked_key, self.unacked_index_key], [tag])
                return None
        with self.channel.conn_or_acquire(client) as conn:
            _RESTORE_MALFORMED(conn, [self.malformed_key, self.malformed_index_key],
                               ["tag", tag, 1])  # fmt: skip
        return None

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        before = self._vrestore_count
        super().restore_visible(start=start, num=num, interval=interval)
        if (before % (interval or 1)) == 0:  # kombu scanned this time: so do we
            ceil = time.time() - self.visibility_timeout
            with self.channel.conn_or_acquire() as client:
                _RESTORE_MALFORMED(client, [self.malformed_key, self.malformed_index_key],
                                   ["before", ceil, num or 100])  # fmt: skip

    def restore_unacked(self, client: Any = None) -> None:
        """Put every message this channel holds back on its queue (the connection closes).

        kombu restores a message from its record in Redis; a record that is gone (Redis came
        back empty) or a Redis that does not answer would lose the message, so such messages
        wait in this process (:data:`_limbo`) and go back on their queues through the next
        connection.
        """
        for tag, message in list(self._delivered.items()):
            if tag in self._dirty or tag in self._settled:
                continue
            try:
                with self.channel.conn_or_acquire(client) as conn:
                    present = conn.hexists(
                        self.malformed_key if is_malformed_tag(tag) else self.unacked_key, tag
                    )
                    if present:
                        self.restore_by_tag(tag, client=conn)
                        continue
            except Exception:
                log.warning("could not put message %s back on its queue now; it waits for the "
                            "next connection", tag)  # fmt: skip
            _keep_for_later(message)
        self._delivered.clear()

    def touch(self) -> None:
        """Renew the unacked index score of every message this channel holds, so that none
        is redelivered while its worker is alive."""
        held = [t for t in self._delivered if t not in self._dirty and t not in self._settled]
        if not held:
            return
        now = time.time()
        normal = {t: now for t in held if not is_malformed_tag(t)}
        malformed = {t: now for t in held if is_malformed_tag(t)}
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            if normal:
                pipe.zadd(self.unacked_index_key, normal, xx=True)
            if malformed:
                pipe.zadd(self.malformed_index_key, malformed, xx=True)
            pipe.execute()

    def settle_keys(self) -> tuple[str, str]:
        """kombu's unacked hash and index, as Redis names them."""
        return self.channel.unacked_key, self.channel.unacked_index_key


_limbo: list[tuple[str, str]] = []
"""Messages that could not be put back on their queues when a connection closed:
(queue, item). The next channel that connects pushes them."""
_limbo_lock = threading.Lock()


def _keep_for_later(message: Any) -> None:
    raw = getattr(message, "_raw", None)
    queue = (message.delivery_info or {}).get("routing_key")
    if raw is None or not queue:
        log.error("message %s could not be kept for the next connection", message.delivery_tag)
        return
    payload = dict(raw)
    properties = dict(payload.get("properties") or {})
    properties["delivery_info"] = {**(properties.get("delivery_info") or {}), "redelivered": True}
    payload["properties"] = properties
    with _limbo_lock:
        _limbo.append((str(queue), json.dumps(payload)))


def _push_limbo(client: Any) -> None:
    """Push the messages kept in :data:`_limbo` back on their queues (next to be taken)."""
    with _limbo_lock:
        items, _limbo[:] = list(_limbo), []
    if not items:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for queue, item in items:
            pipe.rpush(queue, item)
        ring(pipe, {q for q, _ in items})
        pipe.execute()
    except Exception:
        with _limbo_lock:
            _limbo.extend(items)
        raise
    log.warning("put %d messages held across a lost connection back on their queues",
                len(items))  # fmt: skip


class Channel(kombu_redis.Channel):
    """A Redis channel that takes messages with :data:`fetch.lua`, reuses one client for
    acks, and rings the doorbell of every queue it pushes to.

    kombu builds a new redis-py client object for every ack, reject and QoS append
    (``conn_or_acquire`` without a client); building one costs more CPU than the ack's round
    trip. A redis-py client is thread-safe (each command takes a pooled connection), so one
    per channel and pool serves every ack.
    """

    QoS = QoS
    Message = Message
    _shared_client: Any = None
    _no_ack_queues: frozenset[str] = frozenset()
    _waiting = False
    _idle_wait = 0.0
    _fetch_keys: list[str] = []
    _fetch_cache: dict[tuple[str, ...], tuple[int, bytes]]
    max_pop = 16
    """Messages taken per fetch at most (fewer when the prefetch limit leaves less room)."""
    fetch_idle_wait = 0.2
    """Wait, in seconds, between fetches once the queues are empty."""
    fetch_idle_max = 2.0
    """Longest wait between fetches while nothing arrives (the wait doubles up to it)."""
    _backoff = 0.0

    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "fetch_idle_wait",
        "fetch_idle_max",
        "max_pop",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._fetch_cache = {}
        super().__init__(*args, **kwargs)
        if _limbo:
            with contextlib.suppress(Exception), self.conn_or_acquire() as client:
                _push_limbo(client)
        if self.global_keyprefix:
            from agentflow.errors import ConfigError

            raise ConfigError(
                "AgentFlow does not support kombu's global_keyprefix: its producers write "
                "queue keys by their plain names. Give each tenant its own Redis database."
            )

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues = self._no_ack_queues | {queue}
            self._fetch_cache.clear()
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    # -- taking messages -------------------------------------------------------------------
    def _fetch_request(self, queues: list[str], limit: int) -> tuple[bytes, list[str]]:
        """The fetch script's command for `queues`, packed; the queue of each index.

        Everything but the time and the limit is the same from one fetch to the next (the
        queue order changes as the fair cycle rotates), so that part is packed once per
        order: a worker consuming twenty queues fetches hundreds of times a second.
        """
        order = tuple(queues)
        static = self._fetch_cache.get(order)
        if static is None:
            qos = self.qos
            keys = [qos.unacked_key, qos.unacked_index_key, qos.malformed_key,
                    qos.malformed_index_key, qos.malformed_key + ".seq"]  # fmt: skip
            steps = list(dict.fromkeys(str(self.priority(p)) for p in self.priority_steps))
            args: list[Any] = [self.sep, WAKE_PREFIX, len(steps), *steps, len(queues)]
            for queue in queues:
                args += [queue, 0 if queue in self._no_ack_queues else 1]
            fields = ["EVALSHA", _FETCH.sha, len(keys), *keys, *args]
            static = (len(fields) + 2, _resp(fields))
            if len(self._fetch_cache) > 64:
                self._fetch_cache.clear()
            self._fetch_cache[order] = static
        count, body = static
        packed = b"*%d\r\n" % count + body + _resp([repr(time.time()), limit])
        return packed, list(queues)

    def _fetch_limit(self) -> int:
        room = self.qos.can_consume_max_estimate()
        return max(1, self.max_pop if room is None else min(self.max_pop, room))

    def _brpop_start(self, timeout: Any = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        conn = self.client.connection
        self._in_poll = conn
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        if self._idle_wait > 0:
            self._waiting = True
            conn.send_command("BRPOP", *(wake_key(q) for q in queues), self._idle_wait)
            return
        self._waiting = False
        packed, self._fetch_keys = self._fetch_request(list(queues), self._fetch_limit())
        conn.send_packed_command([packed])

    def _brpop_read(self, **options: Any) -> bool:
        try:
            conn = self.client.connection
            waited = self._waiting
            try:
                reply = self.client.parse_response(conn, "BRPOP" if waited else "EVALSHA",
                                                   **options)  # fmt: skip
            except self.connection_errors:
                conn.disconnect()
                raise
            except NoScriptError:
                with self.conn_or_acquire() as client:
                    client.script_load(_FETCH.text)
                raise kombu_redis.Empty() from None
            if waited:  # rung, or the wait ran out (a producer that rings no bell): fetch
                self._idle_wait = 0.0
                self._backoff = (self.fetch_idle_wait if reply is not None
                                 else min(self.fetch_idle_max, 2 * self._backoff))  # fmt: skip
                raise kombu_redis.Empty()
            if len(reply) > 1 or self._backoff <= 0:  # something came: wait briefly again
                self._backoff = self.fetch_idle_wait
            # Queues drained (their doorbells cleared): wait for a ring; else fetch again.
            self._idle_wait = self._backoff if int(reply[0]) else 0.0
            if len(reply) == 1:
                raise kombu_redis.Empty()
            self._deliver_fetched(reply, self._fetch_keys)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu resets it to None too
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _deliver_fetched(self, reply: list[Any], names: list[str]) -> None:
        """Hand what the fetch script took to the consumer, one message at a time."""
        for i in range(1, len(reply), 4):
            kind, index, raw_tag, item = reply[i : i + 4]
            queue = names[int(index) - 1]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(self._payload(int(kind), item, queue, bytes_to_str(raw_tag)),
                                     queue)  # fmt: skip

    @staticmethod
    def _payload(kind: int, item: bytes, queue: str, tag: str) -> dict[str, Any]:
        """The envelope to deliver for a fetched item, under the fetch's own delivery tag;
        a stand-in that says why for an item that is not a kombu envelope."""
        if kind == 2:
            return stand_in(item_text(item), queue, tag, malformed_reason(item))
        try:
            payload = _json.loads(item)
        except (ValueError, RecursionError) as exc:
            return stand_in(item_text(item), queue, tag, malformed_reason(item)
                            if not isinstance(exc, RecursionError)
                            else "queue item is JSON nested too deeply to read")  # fmt: skip
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not (isinstance(properties, dict) and "body" in payload
                and isinstance(properties.get("delivery_info"), dict)
                and isinstance(payload.get("headers") or {}, dict)):  # fmt: skip
            return stand_in(item_text(item), queue, tag,
                            "queue item is JSON but not a kombu message envelope")  # fmt: skip
        properties["delivery_tag"] = tag
        return dict(payload)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """One message from `queue`, taken and recorded in one step (``basic_get``)."""
        qos = self.qos
        keys = [qos.unacked_key, qos.unacked_index_key, qos.malformed_key,
                qos.malformed_index_key, qos.malformed_key + ".seq"]  # fmt: skip
        steps = list(dict.fromkeys(str(self.priority(p)) for p in self.priority_steps))
        args = [self.sep, WAKE_PREFIX, len(steps), *steps, 1, queue,
                0 if queue in self._no_ack_queues else 1, repr(time.time()), 1]  # fmt: skip
        with self.conn_or_acquire() as client:
            reply = _FETCH(client, keys, args)
        if len(reply) < 5:
            raise kombu_redis.Empty()
        kind, _, raw_tag, item = reply[1:5]
        return self._payload(int(kind), item, queue, bytes_to_str(raw_tag))

    def _do_restore_message(self, payload: Any, exchange: Any, routing_key: Any, pipe: Any,
                            leftmost: bool = False) -> None:  # fmt: skip
        """kombu's restore (a dead worker's message back on its queue), plus a ring of the
        queue's doorbell in the same transaction: an idle worker takes it at once."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            queues = self._lookup(exchange, routing_key)
        except Exception:  # kombu logged it: no queue to ring
            return
        ring(pipe, queues)

    # -- publishing ------------------------------------------------------------------------
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's push, plus a ring of the queue's doorbell in the same round trip."""
        if kwargs.get("_publish_batch") is not None:
            super()._put(queue, message, **kwargs)
            kwargs["_publish_batch"].add("lpush", wake_key(queue), 1)
            kwargs["_publish_batch"].add("sadd", QUEUES_KEY, queue)
            return
        pri = self._get_message_priority(message, reverse=False)
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(self._q_for_pri(queue, pri), json.dumps(message))
            if self._expires and queue in self._expires:
                for p in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, p), self._expires[queue])
            ring(pipe, [queue])
            pipe.execute()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`, renewing held messages' scores."""

    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        visibility = float(connection.client.transport_options.get(
            "visibility_timeout", Channel.visibility_timeout))  # fmt: skip
        loop.call_repeatedly(max(0.5, visibility / 4), self._touch_all)

    def _touch_all(self) -> None:
        for channel in list(self.channels):
            try:
                channel.qos.touch()
            except channel.connection_errors:
                log.debug("renewing held messages failed; the next round tries again")
            except Exception:
                log.exception("renewing held messages failed")


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """:class:`Channel` on the master that Redis Sentinel names (kombu's Sentinel pool)."""

    from_transport_options = tuple(  # type: ignore[assignment]
        dict.fromkeys(
            (*Channel.from_transport_options, *kombu_redis.SentinelChannel.from_transport_options)
        )
    )


class SentinelTransport(Transport):
    """:class:`Transport` for ``sentinel://`` URLs (``master_name`` in the transport options)."""

    default_port = 26379  # type: ignore[assignment]
    Channel = SentinelChannel
