"""The producer: validate events, admit them under the backpressure bounds, publish, await results.

Events are Celery task messages for `agentflow.run_event` (see docs/protocol.md), built by
Celery's own `app.amqp.as_task_v2` and pushed by one Lua script per queue that also enforces
`[runner] event_buffer_size` (queued events per agent queue) and `max_concurrent_events`
(events emitted and not yet finished, across all workers). `emit_many` sends any number of
events in one Redis round trip.

Events are validated and built on the caller's thread (its context is the one Celery's
publish signals and a tracer see); their admission and the wait for results run on the
process's event loop through an :class:`~agentflow.client.AsyncClient` (one pipelined
connection for every thread's admissions, one subscription for every waiting result;
docs/benchmarks.md, "Producer cost"). A client given its own ``redis_client``, called on
that loop's thread, or running under gevent or eventlet does both here, with redis-py's
blocking client.

At a bound, `backpressure = "block"` (the default) waits up to `backpressure_timeout` for
room and then raises :class:`BackpressureError`; `"error"` raises at once. Either way nothing
is enqueued that was not admitted, and `BackpressureError.sent` says how many were.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import redis
from celery import Celery
from celery.result import AsyncResult

from agentflow import _aio
from agentflow._redis import schedule
from agentflow._redis.keys import Keys
from agentflow._redis.queues import agent_queue
from agentflow._redis.schedule import Delay
from agentflow.client._build import (
    ADMIT,
    AdmitCall,
    Deadline,
    EventBuilder,
    HandleBase,
    Pending,
    check_timeout,
)
from agentflow.client._results import READY_STATES, ResultWaiter
from agentflow.config import Settings
from agentflow.errors import EventTimeout
from agentflow.models import AgentResult, Event

if TYPE_CHECKING:
    from agentflow.client._async_client import AsyncClient

log = logging.getLogger("agentflow.client")


def known_agents_key(prefix: str) -> str:
    """The Redis hash where workers announce the agents they serve (agent → time)."""
    return Keys(prefix).agents


class EventHandle(HandleBase):
    """A published event: wait for its result, or read what it streams while it runs."""

    def __init__(self, client: Client, event: Event, queue: str, epoch: str | None = None) -> None:
        super().__init__(event, queue, epoch)
        self.client = client

    @property
    def async_result(self) -> AsyncResult:
        """Celery's AsyncResult for the event's task."""
        return self.client.app.AsyncResult(self.id)

    def ready(self) -> bool:
        """True once the event has finished (successfully or not)."""
        return self.client.state(self.id) in READY_STATES

    def result(self, timeout: float | None = 60.0, *, follow: bool = False) -> AgentResult:
        """Wait for the agent's result; raises EventFailed (EventCancelled, ResultLost) or
        EventTimeout; with
        `follow`, the result at the end of its chain (``AgentResult.route``)."""
        return self.client.result(self.id, timeout=timeout, epoch=self.epoch, follow=follow)

    def cancel(self) -> bool:
        """Cancel the event (see :meth:`Client.cancel`)."""
        return self.client.cancel(self.id)

    def signal(self, name: str, payload: Any = None) -> bool:
        """Resume the event waiting for signal `name` (see :meth:`Client.signal`)."""
        return self.client.signal(self.id, name, payload)

    def stream(self, timeout: float | None = 60.0) -> Iterator[Any]:
        """Items the event streams while it runs (LLM tokens, tool results), in order.

        One reader per event: what it has read is trimmed from Redis, which is what the
        writer's backpressure watches.
        """
        from agentflow._redis.connection import get_redis
        from agentflow.streams import iter_stream

        prefix = self.client.settings.broker.key_prefix
        yield from iter_stream(get_redis(), self.id, prefix=prefix, timeout=timeout,
                               done=self.ready, trim=True)  # fmt: skip


class Client(EventBuilder):
    """Emit events and collect their results (blocking; see AsyncClient for asyncio)."""

    def __init__(
        self,
        app: Celery | None = None,
        settings: Settings | None = None,
        redis_client: redis.Redis | None = None,
    ) -> None:
        super().__init__(app, settings)
        app = self.app
        self._own_redis = redis_client is None
        self._on_loop: tuple[Any, AsyncClient] | None = None
        """(the loop, the AsyncClient made on it): made again on another loop (a forked
        child's, or one started after the process's loop was stopped)."""
        self._on_loop_lock = threading.Lock()
        self._closed = False
        if redis_client is None:
            from agentflow._redis.connection import open_redis

            # Waits for a free connection (up to 30 s) instead of raising when every one is
            # in use: a client shared by hundreds of threads queues, it does not fail.
            redis_client = open_redis(app.conf.broker_url, self.settings,
                                      max_connections=self.settings.broker.producer_connections)  # fmt: skip
        self.redis = redis_client
        keys = self.keys
        self._epoch: str | None = None
        prefix = self._meta_prefix
        # Results live in the result backend (the broker's Redis unless [broker] result_url).
        self.results_redis = _results_client(app, self.redis, self.settings)
        self.results = ResultWaiter(self.results_redis, lambda task_id: prefix + task_id,
                                    keys.epoch, keys.survivors,
                                    epochs=self.redis)  # fmt: skip

    # -- validating -------------------------------------------------------------------------
    def _validate(self, event: Event | Mapping[str, Any]) -> tuple[Event, str]:
        event, name = self._resolve(event)
        if name not in self._known:
            self._check_agent(name)
        return self._with_agent(event, name), agent_queue(name)

    def _check_agent(self, name: str) -> None:
        from agentflow.agents.registry import agent_names

        if name in agent_names() or self.redis.hexists(self._known_key, name):
            self._known.add(name)
            return
        raise self._unknown(name, set(agent_names()) | self._announced())

    def _announced(self) -> set[str]:
        names: list[bytes] = cast(Any, self.redis.hkeys(self._known_key))
        return {m.decode() for m in names}

    def epoch(self) -> str:
        """The Redis epoch this client emits under (see :mod:`agentflow._worker.heartbeat`)."""
        if self._epoch is None:
            self.redis.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
            raw = self.redis.get(self.keys.epoch)
            self._epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
        return self._epoch

    # -- publishing ------------------------------------------------------------------------
    def emit(
        self, event: Event | Mapping[str, Any], *, timeout: float | None = None,
        delay: Delay | None = None, at: datetime | float | None = None,
    ) -> EventHandle:  # fmt: skip
        """Validate and publish one event; returns its handle.

        With `delay` (seconds, a timedelta or a duration such as ``"10m"``) or `at` (an
        aware datetime or epoch seconds) the event is validated and built now and runs when
        due (see :mod:`agentflow._redis.schedule`); its handle works as for any event."""
        return self.emit_many([event], timeout=timeout, delay=delay, at=at)[0]

    def emit_many(
        self, events: Iterable[Event | Mapping[str, Any]], *, timeout: float | None = None,
        delay: Delay | None = None, at: datetime | float | None = None,
    ) -> list[EventHandle]:  # fmt: skip
        """Validate all events first, then publish them in one round trip (per admission try);
        with `delay` or `at`, schedule them all for that time (one round trip)."""
        due = schedule.due_time(delay, at)
        now = time.time()
        if due is not None and due <= now:
            due = None  # due already: sent now
        handles: list[EventHandle] = []
        pending: Pending = {}
        traced: dict[str, contextvars.Context] = {}
        epoch = self.epoch()
        for raw in events:
            event, queue = self._validate(raw)
            handles.append(EventHandle(self, event, queue, epoch))
            lane = self._lane(queue, event)
            message = self._message(event, queue, traced, enqueued_at=due)
            pending.setdefault(lane, []).append((event.id, message))
        if due is not None:
            if pending:
                schedule.SCHEDULE(self.redis, *self._schedule_call(pending, due))
            self._published(handles, traced)
            return handles
        deadline = self._deadline(timeout)
        sent, delay = 0, 0.005
        while pending:
            order, calls = self._admission(pending)
            sent += self._admitted(pending, order, self._admit_all(calls))
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise self._refused(pending, sent)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._published(handles, traced)
        return handles

    def _loop_client(self) -> AsyncClient | None:
        """The AsyncClient that runs this client's admissions and result waits on the
        process's event loop (made there on first use, again in a forked child); None where
        they run on the caller's thread (see the module's docstring)."""
        if not self._own_redis or not _aio.can_wait_on_loop():
            return None
        if self._closed:
            raise RuntimeError("the client is closed")
        made = self._on_loop
        loop = _aio.get_loop()
        if made is None or made[0] is not loop:
            with self._on_loop_lock:
                if self._closed:
                    raise RuntimeError("the client is closed")
                made = self._on_loop
                if made is None or made[0] is not loop:
                    made = self._on_loop = (loop, _aio.run(_make_async(self.app, self.settings)))
        return made[1]

    def _admit_all(self, calls: list[AdmitCall]) -> list[Any]:
        """The admission script once per queue, on the loop's shared connection (see
        :meth:`AsyncClient._admit_all <agentflow.client.AsyncClient._admit_all>`), else here
        in one pipeline (EVALSHA only).

        redis-py's pipeline asks SCRIPT EXISTS before every execute when a Script object is
        queued in it: a second round trip per emit. Here the script is loaded only when Redis
        says it does not know it (after a restart or SCRIPT FLUSH); then nothing ran, and the
        round is sent again.
        """
        on_loop = self._loop_client()
        if on_loop is not None:
            return _aio.run(on_loop._admit_all(calls))
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*ADMIT.command(*call))
            waited = self._replica_wait is not None and self._replica_wait.add(pipe)
            try:
                return self._confirmed(waited, list(pipe.execute()))
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.redis.script_load(ADMIT.text)
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------
    def handle(self, event_id: str) -> EventHandle:
        """A handle for an event emitted elsewhere (its data is not known here)."""
        return EventHandle(self, Event(id=event_id, type="unknown"), "")

    def state(self, event_id: str) -> str:
        """The event's Celery state: PENDING (queued, scheduled or running), WAITING (for a
        signal), SUCCESS, FAILURE, REVOKED (cancelled), or RETRY."""
        raw: Any = self.results_redis.get(self._meta_prefix + event_id)
        if raw is None:
            return "PENDING"
        return str(json.loads(raw).get("status", "PENDING"))

    def result(self, event_id: str, timeout: float | None = 60.0,
               epoch: str | None = None, *, follow: bool = False) -> AgentResult:  # fmt: skip
        """Wait for an event's result; raises EventFailed (with the reason; EventCancelled
        for a cancelled event, ResultLost when Redis lost it) or EventTimeout.

        With `follow`, wait for the end of its chain: while a result routed to a next
        agent (``AgentResult.route``), wait for that event's result instead (the first
        one's, for a route to several agents), all within `timeout`."""
        check_timeout(timeout)
        deadline = Deadline(timeout)
        while True:
            try:
                meta = self._wait(event_id, deadline.left(), epoch)
            except TimeoutError:
                raise EventTimeout(f"no result for event {event_id} within {timeout}s") from None
            result = self._outcome(event_id, meta)
            if not (follow and result.next_events):
                return result
            event_id = result.next_events[0]

    def _wait(self, event_id: str, timeout: float | None, epoch: str | None) -> dict[str, Any]:
        """The event's result entry once it is ready (TimeoutError after `timeout`): from
        the loop's subscription, else from this client's result thread."""
        on_loop = self._loop_client()
        if on_loop is None:
            return self.results.wait(event_id, timeout, epoch)
        return _aio.run(on_loop.results.wait(event_id, timeout, epoch))

    def cancel(self, event_id: str) -> bool:
        """Cancel an event, wherever it is: queued, waiting for a worker's slot, running
        (its coroutine is cancelled; a sync agent is stopped), or waiting for its tool calls
        (running ones end with a "cancelled" error). Its result becomes REVOKED
        (:class:`EventCancelled`), its state delta is not applied, its stream ends with a
        cancelled marker, and it is neither dead-lettered nor redelivered. False when the
        event had already finished."""
        self.redis.set(self.keys.cancel(event_id), 1, ex=int(self.settings.broker.result_expires))
        if schedule.UNSCHEDULE(self.redis, *self._unschedule_call(event_id)):
            return True  # a delayed event: due now, and its worker marks it cancelled
        if self._resume(event_id, "", None):
            return True  # a waiting event: resumed, and its worker marks it cancelled
        if self.state(event_id) in READY_STATES:
            return False
        self._broadcast_cancel(event_id)
        return True

    def signal(self, event_id: str, name: str, payload: Any = None) -> bool:
        """Resume an event that waits for signal `name` (its agent returned
        ``WaitFor(name)``): its ``on_signal`` runs on any worker with `payload` (JSON), and
        its result becomes the event's. True when this call resumed it; False when it does
        not wait for `name` (not yet, no more: resumed by another signal or its timeout, or
        finished). A wait is resumed once, however many signals race."""
        return self._resume(event_id, name, payload)

    def _resume(self, event_id: str, name: str, payload: Any) -> bool:
        record = cast(Any, self.redis.hmget(self.keys.wait(event_id), self._wait_fields()))
        call = self._signal_call(event_id, name, payload, list(record))
        if call is None:
            return False
        from agentflow._redis.waits import SIGNAL

        return bool(SIGNAL(self.redis, *call))

    def close(self) -> None:
        """Release connections, the result thread and the loop's client; the client cannot
        be used afterwards."""
        with self._on_loop_lock:
            self._closed = True
            made, self._on_loop = self._on_loop, None
        try:
            # Closed on its own loop, if that still runs here (not in a forked child, not
            # after the loop was stopped: its connections then go with it).
            if made is not None and made[0] is _aio.started_loop() and _aio.can_wait_on_loop():
                _aio.run(made[1].close(), timeout=10)
        except Exception as exc:
            log.warning("closing the client's loop side failed: %s", exc)
        finally:
            self.results.close()
            self.redis.close()


async def _make_async(app: Celery, settings: Settings) -> AsyncClient:
    """An AsyncClient of `app` and `settings`, made on the loop that will use it."""
    from agentflow.client._async_client import AsyncClient

    return AsyncClient(app=app, settings=settings)


def _results_client(app: Celery, broker: redis.Redis, settings: Settings) -> redis.Redis:
    """A client on the result backend's Redis: `broker` when they are the same database."""
    from celery.backends.redis import RedisBackend

    from agentflow._redis.connection import is_sentinel, open_redis
    from agentflow._redis.publish import same_redis

    backend = app.backend
    if not isinstance(backend, RedisBackend) or same_redis(backend.client, broker):
        return broker
    url = str(app.conf.result_backend)
    if is_sentinel(url):  # its pool asks the sentinels: a pool of its own, not a copy
        return open_redis(url, settings, max_connections=16)
    pool = backend.client.connection_pool  # Celery's settings (TLS options) carried over
    return redis.Redis(connection_pool=redis.BlockingConnectionPool(
        connection_class=pool.connection_class, max_connections=16, timeout=30,
        **pool.connection_kwargs))  # fmt: skip
