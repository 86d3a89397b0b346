"""The producer: validate events, admit them under the backpressure bounds, publish, await results.

Events are Celery task messages for `agentflow.run_event` (see docs/protocol.md), built by
Celery's own `app.amqp.as_task_v2` and pushed by one Lua script per queue that also enforces
`[runner] event_buffer_size` (queued events per agent queue) and `max_concurrent_events`
(events emitted and not yet finished, across all workers). `emit_many` sends any number of
events in one Redis round trip.

At a bound, `backpressure = "block"` (the default) waits up to `backpressure_timeout` for
room and then raises :class:`BackpressureError`; `"error"` raises at once. Either way nothing
is enqueued that was not admitted, and `BackpressureError.sent` says how many were.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import redis
from celery import Celery, signals
from celery.result import AsyncResult
from pydantic import ValidationError

from agentflow._redis.doorbell import QUEUES_KEY, WAKE_LIMIT, wake_key
from agentflow._redis.keys import Keys
from agentflow._redis.messages import ENQUEUED_AT_HEADER, encode_body, envelope, origin, short_repr
from agentflow._redis.queues import RUN_EVENT_TASK, agent_queue
from agentflow._redis.routes import resolve_agent
from agentflow._redis.scripts import Script
from agentflow.client._results import ResultWaiter
from agentflow.config import Settings, get_settings
from agentflow.errors import (
    BackpressureError,
    EventCancelled,
    EventFailed,
    EventTimeout,
    InvalidEvent,
    UnknownAgent,
)
from agentflow.models import AgentResult, Event

_ADMIT = Script("admit")


def known_agents_key(prefix: str) -> str:
    """The Redis hash where workers announce the agents they serve (agent → time)."""
    return Keys(prefix).agents


class EventHandle:
    """A published event: wait for its result, or read what it streams while it runs."""

    def __init__(self, client: Client, event: Event, queue: str, epoch: str | None = None) -> None:
        self.client = client
        self.event = event
        self.queue = queue
        self.epoch = epoch
        """The Redis epoch the event was emitted under (a later one means it may be lost)."""

    @property
    def id(self) -> str:
        """The event id, which is also its Celery task id."""
        return self.event.id

    @property
    def async_result(self) -> AsyncResult:
        """Celery's AsyncResult for the event's task."""
        return self.client.app.AsyncResult(self.id)

    def ready(self) -> bool:
        """True once the event has finished (successfully or not)."""
        return self.client.state(self.id) in ("SUCCESS", "FAILURE", "REVOKED")

    def result(self, timeout: float | None = 60.0) -> AgentResult:
        """Wait for the agent's result; raises EventFailed (EventCancelled, ResultLost) or
        EventTimeout."""
        return self.client.result(self.id, timeout=timeout, epoch=self.epoch)

    def cancel(self) -> bool:
        """Cancel the event (see :meth:`Client.cancel`)."""
        return self.client.cancel(self.id)

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

    def __repr__(self) -> str:
        return f"<EventHandle {self.id} → {self.queue}>"


class Client:
    """Emit events and collect their results."""

    def __init__(
        self,
        app: Celery | None = None,
        settings: Settings | None = None,
        redis_client: redis.Redis | None = None,
    ) -> None:
        if app is None:
            from agentflow.celery_app import app as default_app

            app = default_app
        self.app = app
        self.settings = settings or get_settings()
        if redis_client is None:
            # Waits for a free connection (up to 30 s) instead of raising when every one is
            # in use: a client shared by hundreds of threads queues, it does not fail.
            pool = redis.BlockingConnectionPool.from_url(
                app.conf.broker_url, max_connections=self.settings.broker.producer_connections,
                timeout=30, socket_keepalive=True,
            )  # fmt: skip
            redis_client = redis.Redis(connection_pool=pool)
        self.redis = redis_client
        self.keys = keys = Keys(self.settings.broker.key_prefix)
        self._inflight_key = keys.inflight
        self._known_key = keys.agents
        self._known: set[str] = set()
        runner = self.settings.runner
        self._inflight_ttl = runner.hard_time_limit + 2 * runner.visibility_timeout
        self._epoch: str | None = None
        prefix = bytes(app.backend.task_keyprefix).decode()
        # Results live in the result backend (the broker's Redis unless [broker] result_url).
        self.results_redis = _results_client(app, self.redis)
        self.results = ResultWaiter(self.results_redis, lambda task_id: prefix + task_id,
                                    keys.epoch, keys.survivors,
                                    epochs=self.redis)  # fmt: skip
        self._meta_prefix = prefix

    # -- building messages -----------------------------------------------------------------
    def _validate(self, event: Event | Mapping[str, Any]) -> tuple[Event, str]:
        if not isinstance(event, Event):
            try:
                event = Event.model_validate(dict(event))
            except ValidationError as exc:
                raise InvalidEvent(f"invalid event: {exc}", exc.errors()) from None
        try:
            name = resolve_agent({"agent": event.agent, "type": event.type}, self.settings)
        except UnknownAgent as exc:
            raise InvalidEvent(str(exc)) from None
        if name not in self._known:
            self._check_agent(name)
        if event.agent is None:
            event = event.model_copy(update={"agent": name})
        return event, agent_queue(name)

    def _check_agent(self, name: str) -> None:
        from agentflow.agents.registry import agent_names

        if name in agent_names() or self.redis.hexists(self._known_key, name):
            self._known.add(name)
            return
        raise UnknownAgent(
            f"no worker serves agent {name!r}: register it (@agent) and start a worker "
            f"(known: {sorted(set(agent_names()) | self._announced())})"
        )

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

    def _message(self, event: Event, queue: str,
                 traced: dict[str, contextvars.Context] | None = None) -> str:  # fmt: skip
        payload = event.model_dump(mode="json")
        try:
            body = encode_body([payload], {}, {"callbacks": None, "errbacks": None,
                                               "chain": None, "chord": None})  # fmt: skip
        except ValueError as exc:  # NaN or Infinity: not JSON any other producer could read
            raise InvalidEvent(f"event {event.id} is not valid JSON: {exc}") from None
        if len(body) > self.settings.runner.max_event_bytes:
            raise InvalidEvent(
                f"event {event.id} is {len(body)} bytes; max_event_bytes="
                f"{self.settings.runner.max_event_bytes}"
            )
        args = (payload,)
        msg = self.app.amqp.as_task_v2(
            event.id, RUN_EVENT_TASK, args=args, kwargs={}, time_limit=None,
            soft_time_limit=None, argsrepr=short_repr(args), kwargsrepr="{}", origin=origin(),
        )  # fmt: skip
        headers = dict(msg.headers)
        headers[ENQUEUED_AT_HEADER] = time.time()
        properties = dict(msg.properties)
        if signals.before_task_publish.receivers:  # tracing (OpenTelemetry) injects here
            # Each message's publish signals run in a copy of the caller's context (kept in
            # `traced` for after_task_publish): a tracer's publish span is current for that
            # message only, not for the next one's (as when Celery publishes one at a time).
            ctx = contextvars.copy_context()
            ctx.run(functools.partial(
                signals.before_task_publish.send,
                sender=RUN_EVENT_TASK, body=msg.body, exchange="", routing_key=queue,
                declare=[], headers=headers, properties=properties, retry_policy=None,
            ))  # fmt: skip
            if traced is not None:
                traced[event.id] = ctx
        return envelope(headers, properties, body, queue)

    # -- publishing ------------------------------------------------------------------------
    def emit(
        self, event: Event | Mapping[str, Any], *, timeout: float | None = None
    ) -> EventHandle:
        """Validate and publish one event; returns its handle."""
        return self.emit_many([event], timeout=timeout)[0]

    def emit_many(
        self, events: Iterable[Event | Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[EventHandle]:
        """Validate all events first, then publish them in one round trip (per admission try)."""
        handles: list[EventHandle] = []
        pending: dict[str, list[tuple[str, str]]] = {}
        traced: dict[str, contextvars.Context] = {}
        epoch = self.epoch()
        for raw in events:
            event, queue = self._validate(raw)
            handles.append(EventHandle(self, event, queue, epoch))
            pending.setdefault(queue, []).append((event.id, self._message(event, queue, traced)))
        runner = self.settings.runner
        wait = runner.backpressure_timeout if timeout is None else timeout
        deadline = time.monotonic() + (wait if runner.backpressure == "block" else 0.0)
        sent, delay = 0, 0.005
        while pending:
            sent += self._publish_round(pending)
            if not pending:
                break
            if time.monotonic() >= deadline:
                queue, items = next(iter(pending.items()))
                raise BackpressureError(
                    f"backpressure: {len(items)} event(s) for {queue} not admitted "
                    f"(max_concurrent_events={runner.max_concurrent_events}, "
                    f"event_buffer_size={runner.event_buffer_size}); {sent} sent",
                    sent=sent,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if signals.after_task_publish.receivers:
            for handle in handles:
                ctx = traced.get(handle.id)
                ctx = contextvars.copy_context() if ctx is None else ctx
                ctx.run(functools.partial(
                    signals.after_task_publish.send, sender=RUN_EVENT_TASK, body=None,
                    headers={"id": handle.id, "task": RUN_EVENT_TASK}, exchange="",
                    routing_key=handle.queue,
                ))  # fmt: skip
        return handles

    def _publish_round(self, pending: dict[str, list[tuple[str, str]]]) -> int:
        runner = self.settings.runner
        now = time.time()
        order = list(pending)
        calls: list[list[Any]] = []
        for queue in order:
            items = pending[queue]
            args: list[Any] = [now, now + self._inflight_ttl, runner.max_concurrent_events,
                               runner.event_buffer_size, len(items)]  # fmt: skip
            for event_id, message in items:
                args += [event_id, message]
            args.append(WAKE_LIMIT)
            calls.append([self._inflight_key, queue, wake_key(queue), QUEUES_KEY, *args])
        sent = 0
        for queue, (admitted, _inflight, _queued) in zip(order, self._admit_all(calls),
                                                         strict=True):  # fmt: skip
            admitted = int(admitted)
            sent += admitted
            rest = pending[queue][admitted:]
            if rest:
                pending[queue] = rest
            else:
                del pending[queue]
        return sent

    def _admit_all(self, calls: list[list[Any]]) -> list[Any]:
        """Run the admission script once per queue in one pipeline (EVALSHA only).

        redis-py's pipeline asks SCRIPT EXISTS before every execute when a Script object is
        queued in it: a second round trip per emit. Here the script is loaded only when Redis
        says it does not know it (after a restart or SCRIPT FLUSH); then nothing ran, and the
        round is sent again.
        """
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*_ADMIT.command(call[:4], call[4:]))
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.redis.script_load(_ADMIT.text)
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------
    def handle(self, event_id: str) -> EventHandle:
        """A handle for an event emitted elsewhere (its data is not known here)."""
        return EventHandle(self, Event(id=event_id, type="unknown"), "")

    def state(self, event_id: str) -> str:
        """The event's Celery state: PENDING (queued or running), SUCCESS, FAILURE,
        REVOKED (cancelled), or RETRY."""
        raw: Any = self.results_redis.get(self._meta_prefix + event_id)
        if raw is None:
            return "PENDING"
        return str(json.loads(raw).get("status", "PENDING"))

    def result(self, event_id: str, timeout: float | None = 60.0,
               epoch: str | None = None) -> AgentResult:  # fmt: skip
        """Wait for an event's result; raises EventFailed (with the reason; EventCancelled
        for a cancelled event, ResultLost when Redis lost it) or EventTimeout."""
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        try:
            meta = self.results.wait(event_id, timeout, epoch)
        except TimeoutError:
            raise EventTimeout(f"no result for event {event_id} within {timeout}s") from None
        status = meta.get("status")
        if status == "SUCCESS":
            return AgentResult.model_validate(meta.get("result"))
        if status == "REVOKED":
            raise EventCancelled(event_id, "cancelled")
        error = meta.get("result")
        if isinstance(error, dict) and "exc_type" in error:
            reason = f"{error.get('exc_type')}: {_message_of(error.get('exc_message'))}"
        else:
            reason = str(error)
        raise EventFailed(event_id, reason)

    def cancel(self, event_id: str) -> bool:
        """Cancel an event, wherever it is: queued, waiting for a worker's slot, running
        (its coroutine is cancelled; a sync agent is stopped), or waiting for its tool calls
        (running ones end with a "cancelled" error). Its result becomes REVOKED
        (:class:`EventCancelled`), its state delta is not applied, its stream ends with a
        cancelled marker, and it is neither dead-lettered nor redelivered. False when the
        event had already finished."""
        self.redis.set(self.keys.cancel(event_id), 1, ex=int(self.settings.broker.result_expires))
        raw: Any = self.results_redis.get(self._meta_prefix + event_id)
        if raw is not None and json.loads(raw).get("status") in ("SUCCESS", "FAILURE",
                                                                  "REVOKED"):  # fmt: skip
            return False
        control = self.app.control
        control.revoke(event_id, terminate=True)
        control.broadcast("agentflow_cancel", arguments={"event_id": event_id})
        return True

    def close(self) -> None:
        """Release connections and the result thread."""
        self.results.close()
        self.redis.close()


def _results_client(app: Celery, broker: redis.Redis) -> redis.Redis:
    """A client on the result backend's Redis: `broker` when they are the same database."""
    from celery.backends.redis import RedisBackend

    from agentflow._redis.publish import same_redis

    backend = app.backend
    if not isinstance(backend, RedisBackend) or same_redis(backend.client, broker):
        return broker
    return redis.Redis(
        connection_pool=redis.BlockingConnectionPool(
            connection_class=backend.client.connection_pool.connection_class,
            max_connections=16,
            timeout=30,
            **backend.client.connection_pool.connection_kwargs,
        )
    )


def _message_of(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
