"""Celery's task events, published from the worker's event loop without waiting for Redis.

Celery's worker buffers its task events (task-received, -started, -succeeded, ...) and
publishes each buffer as one ``task.multi`` message through kombu: a ``Producer.publish``
that prepares the message, serialises it, wraps it in kombu's Redis envelope and sends a
blocking ``PUBLISH`` on the consumer's thread. On AgentFlow's asyncio pool that machinery was
most of what task events cost (docs/flower.md, docs/internals.md). :class:`TaskEventDispatcher`
is Celery's own ``EventDispatcher`` (its buffering, groups, Lamport clock, enable/disable)
with one step replaced: in a worker process whose pool runs on the loop, a task event
message is encoded once, as kombu would encode it, and handed to the loop, which sends its
``PUBLISH`` in the worker's next batch of Redis commands. Worker events (online, heartbeat,
offline) keep kombu's publish on the consumer's thread. Anywhere else (a producer's task-sent events, a
prefork worker, a custom event serializer) it publishes through kombu as Celery does.

A message that Redis refused goes back to Celery's outbound buffer at the next flush
(published again, as Celery does with events sent while the broker is away), up to
:data:`REBUFFER_LIMIT` messages (each a buffer of events). A message whose ``PUBLISH``
reached Redis just before the connection broke is sent again: Flower may count it twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher
from celery.utils.time import utcoffset as celery_utcoffset
from kombu.utils.json import dumps as kombu_dumps

from agentflow._redis.messages import fanout_envelope

log = logging.getLogger("agentflow.events")

REBUFFER_LIMIT = 1_000
"""Messages kept for a later flush while Redis refuses them; beyond that they are dropped
(each flush encodes them again, so the backlog of an outage is kept small)."""

_DRAIN_TIMEOUT = 2.0
"""Seconds ``close`` waits for messages still on their way to Redis."""


class Events(CeleryEvents):
    """``app.events`` for AgentFlow's app: Celery's, with :class:`TaskEventDispatcher`."""

    dispatcher_cls = "agentflow._worker.task_events:TaskEventDispatcher"


class TaskEventDispatcher(EventDispatcher):
    """Celery's ``EventDispatcher``; on a worker with an attached :class:`Outbox`, the
    consumer's buffers of task events go out on the worker's event loop instead of through a
    blocking kombu publish."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._topics: dict[str, list[str]] = {}
        self._used_outbox = False
        super().__init__(*args, **kwargs)

    def send(self, type: str, blind: bool = False, utcoffset: Callable[[], float] | None = None,
             **fields: Any) -> Any:  # fmt: skip
        """Celery's ``send``, with the UTC offset read once a minute, not per event."""
        return super().send(type, blind=blind, utcoffset=utcoffset or _utcoffset, **fields)

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        """Celery's ``flush``; messages Redis refused since the last one go first."""
        outbox = _outbox
        if errors and outbox is not None and outbox.refused:
            with self.mutex:
                outbox.take_refused(self._outbound_buffer)
        super().flush(errors=errors, groups=groups)

    def _publish(self, event: Any, producer: Any, routing_key: str, retry: bool = False,
                 retry_policy: Any = None, utcoffset: Any = None) -> None:  # fmt: skip
        outbox = _outbox
        if producer is None:
            return
        # The consumer's own buffers of task events only (no retry asked, a buffer group
        # set). Worker-online/-heartbeat/-offline keep kombu's publish on the consumer's
        # thread, so a worker whose loop is stuck still says it is alive; a task's own
        # ``send_event`` (``retry=True``, a dispatcher of its own) keeps Celery's retries.
        if (outbox is None or not outbox.open or self.serializer != "json" or retry
                or not self.buffer_group or not routing_key.startswith("task.")):  # fmt: skip
            self._kombu_publish(event, producer, routing_key, retry, retry_policy)
            return
        try:
            topics = self._topics.get(routing_key) or self._topic(producer, routing_key)
            payload = self._envelope(event, routing_key)
        except Exception:  # an unexpected field, a channel that will not open: Celery's way
            self._kombu_publish(event, producer, routing_key, retry, retry_policy)
            return
        self._used_outbox = True
        message: tuple[Any, str] | None = (event, routing_key)
        for topic in topics:  # kept once for a later flush, however many topics
            outbox.put(topic, payload, message)
            message = None

    def _kombu_publish(self, event: Any, producer: Any, routing_key: str, retry: bool,
                       retry_policy: Any) -> None:  # fmt: skip
        super()._publish(event, producer, routing_key, retry=retry, retry_policy=retry_policy)

    def _topic(self, producer: Any, routing_key: str) -> list[str]:
        """The Redis channels kombu's Redis transport publishes `routing_key` of the event
        exchange on (``/{db}.celeryev/task.multi``, and the legacy one with Sentinel's
        ``sentinel_fanout_compat``)."""
        topics = [str(t) for t in producer.channel._get_publish_topics(self.exchange.name,
                                                                        routing_key)]  # fmt: skip
        self._topics[routing_key] = topics
        return topics

    def _envelope(self, event: Any, routing_key: str) -> str:
        """The message as kombu's Redis transport writes it: the event (or the buffer's
        list of events) as JSON, in kombu's envelope."""
        try:
            body = json.dumps(event)
        except TypeError:  # a datetime, a UUID...: kombu's encoder knows them
            body = kombu_dumps(event)
        return fanout_envelope(body.encode(), self.headers, self.exchange.name, routing_key,
                               self.delivery_mode)  # fmt: skip

    def close(self) -> None:
        """Celery's ``close``, after the messages on their way to Redis went out (at most
        two seconds; Celery's Events step hands what Redis refused to the next dispatcher)."""
        outbox = _outbox
        if outbox is not None and self._used_outbox:
            outbox.wait_sent(_DRAIN_TIMEOUT)
        super().close()


class Outbox:
    """Event messages handed to the worker's loop: any thread puts, the loop publishes them
    in its batch of Redis commands (:meth:`~agentflow._redis.script_batch.ScriptBatch.command`).

    A message Redis refused waits in :attr:`refused` (no lock of the dispatcher's is taken on
    the loop) until the next flush of any dispatcher of the process, which publishes it
    again: so what a dispatcher replaced at a reconnect left behind is not lost."""

    def __init__(self, loop: Any, batch: Callable[[], Any]) -> None:
        self.loop = loop
        self.batch = batch
        """Returns the loop's command batch (called on the loop)."""
        self.open = True
        self.refused: collections.deque[tuple[Any, str]] = collections.deque()
        """(event, routing key) of messages Redis refused, for the next flush."""
        self._queue: collections.deque[tuple[str, str, tuple[Any, str] | None]] = (
            collections.deque())  # fmt: skip
        self._dropping = False
        self._lock = threading.Lock()
        self._scheduled = False
        self._in_flight = 0

    def put(self, topic: str, payload: str, message: tuple[Any, str] | None) -> None:
        """Publish `payload` on `topic` from the loop; `message` (the event and its routing
        key) is kept for a later flush if Redis refuses it."""
        with self._lock:
            self._in_flight += 1
            self._queue.append((topic, payload, message))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing will send it
            self.open = False
            with self._lock:
                self._scheduled = False
            self._fail_queued()

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        try:
            batch = self.batch()
        except Exception:
            log.exception("task events: no Redis batch on the loop")
            self._fail_queued()
            return
        queue = self._queue
        while queue:
            topic, payload, message = queue.popleft()
            batch.command("PUBLISH", topic, payload).add_done_callback(
                lambda future, message=message: self._sent(future, message))  # fmt: skip

    def _sent(self, future: Any, message: tuple[Any, str] | None) -> None:
        with self._lock:
            self._in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            self._refuse(message)

    def _refuse(self, message: tuple[Any, str] | None) -> None:
        if message is None:
            return
        if len(self.refused) < REBUFFER_LIMIT:
            self.refused.append(message)
        elif not self._dropping:
            self._dropping = True
            log.warning("task events: Redis refuses them and %d messages wait; dropping more",
                        REBUFFER_LIMIT)  # fmt: skip

    def _fail_queued(self) -> None:
        while self._queue:
            _, _, message = self._queue.popleft()
            with self._lock:
                self._in_flight -= 1
            self._refuse(message)

    def take_refused(self, buffer: Any) -> None:
        """Move the refused messages onto a dispatcher's outbound `buffer` (under its mutex)."""
        refused = self.refused
        self._dropping = False
        while refused:
            buffer.append(refused.popleft())

    def wait_sent(self, timeout: float) -> bool:
        """Wait (off the loop) until every message put has been answered; False on timeout."""
        if _on_loop(self.loop) or not self.loop.is_running():
            return self._in_flight == 0
        deadline = time.monotonic() + timeout
        while self._in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._in_flight == 0


def _on_loop(loop: Any) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_outbox: Outbox | None = None


def attach(loop: Any, batch: Callable[[], Any]) -> Outbox:
    """Publish this process's task events from `loop` (the asyncio pool calls this at start)."""
    global _outbox
    _outbox = Outbox(loop, batch)
    return _outbox


def detach() -> None:
    """Publish through kombu again (the loop is stopping; a forked child, which has no loop
    thread; tests)."""
    global _outbox
    if _outbox is not None:
        _outbox.open = False
    _outbox = None


os.register_at_fork(after_in_child=detach)


_offset: tuple[float, float] = (0.0, -1.0)


def _utcoffset() -> float:
    """Celery's ``utcoffset()``, re-read at most once a minute (it changes at DST
    boundaries; reading it costs a ``localtime`` call per event)."""
    global _offset
    now = time.monotonic()
    value, until = _offset
    if now >= until:
        value = celery_utcoffset()
        _offset = (value, now + 60.0)
    return value
