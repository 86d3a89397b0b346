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

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from pydantic import ValidationError

from agentflow.broker.messages import encode_body, envelope, origin, short_repr
from agentflow.broker.queues import RUN_EVENT_TASK, agent_queue
from agentflow.broker.routes import resolve_agent
from agentflow.config import Settings, get_settings
from agentflow.errors import (
    BackpressureError,
    EventFailed,
    EventTimeout,
    InvalidEvent,
    UnknownAgent,
)
from agentflow.models import AgentResult, Event
from agentflow.tasks.runner import ENQUEUED_AT_HEADER

# KEYS: inflight, queue.  ARGV: now, expire_at, max_inflight, max_queued, n, id1, msg1, ...
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local inflight = redis.call('ZCARD', KEYS[1])
local queued = redis.call('LLEN', KEYS[2])
local room = math.min(tonumber(ARGV[3]) - inflight, tonumber(ARGV[4]) - queued, tonumber(ARGV[5]))
if room <= 0 then return {0, inflight, queued} end
for i = 1, room do
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4 + 2 * i])
  redis.call('LPUSH', KEYS[2], ARGV[5 + 2 * i])
end
return {room, inflight, queued}
"""


def known_agents_key(prefix: str) -> str:
    """The Redis set where workers announce the agents they serve."""
    return f"{prefix}:agents"


class EventHandle:
    """A published event: wait for its result, or read what it streams while it runs."""

    def __init__(self, client: Client, event: Event, queue: str) -> None:
        self.client = client
        self.event = event
        self.queue = queue

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
        return bool(self.async_result.ready())

    def result(self, timeout: float | None = 60.0) -> AgentResult:
        """Wait for the agent's result; raises EventFailed or EventTimeout."""
        return self.client.result(self.id, timeout=timeout)

    def stream(self, timeout: float | None = 60.0) -> Iterator[Any]:
        """Items the event streams while it runs (LLM tokens, tool results), in order.

        One reader per event: what it has read is trimmed from Redis, which is what the
        writer's backpressure watches.
        """
        from agentflow.broker.connection import get_redis
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
            from agentflow.app import app as default_app

            app = default_app
        self.app = app
        self.settings = settings or get_settings()
        if redis_client is None:
            redis_client = redis.Redis.from_url(app.conf.broker_url, max_connections=64)
        self.redis = redis_client
        prefix = self.settings.broker.key_prefix
        self._inflight_key = f"{prefix}:inflight"
        self._known_key = known_agents_key(prefix)
        self._admit = self.redis.register_script(_ADMIT)
        self._known: set[str] = set()
        runner = self.settings.runner
        self._inflight_ttl = runner.effective_visibility_timeout + runner.hard_time_limit

    # -- building messages -----------------------------------------------------------------
    def _validate(self, event: Event | Mapping[str, Any]) -> tuple[Event, str]:
        if not isinstance(event, Event):
            try:
                event = Event.model_validate(dict(event))
            except ValidationError as exc:
                raise InvalidEvent(f"invalid event: {exc}", exc.errors()) from None
        try:
            name = resolve_agent(event.model_dump(include={"agent", "type"}), self.settings)
        except UnknownAgent as exc:
            raise InvalidEvent(str(exc)) from None
        if name not in self._known:
            self._check_agent(name)
        if event.agent is None:
            event = event.model_copy(update={"agent": name})
        return event, agent_queue(name)

    def _check_agent(self, name: str) -> None:
        from agentflow.agents.registry import agent_names

        if name in agent_names() or self.redis.sismember(self._known_key, name):
            self._known.add(name)
            return
        raise UnknownAgent(
            f"no worker serves agent {name!r}: register it (@agent) and start a worker "
            f"(known: {sorted(set(agent_names()) | self._announced())})"
        )

    def _announced(self) -> set[str]:
        members: set[bytes] = cast(Any, self.redis.smembers(self._known_key))
        return {m.decode() for m in members}

    def _message(self, event: Event, queue: str) -> str:
        payload = event.model_dump(mode="json")
        body = encode_body([payload], {}, {"callbacks": None, "errbacks": None,
                                           "chain": None, "chord": None})  # fmt: skip
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
        return envelope(headers, dict(msg.properties), body, queue)

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
        for raw in events:
            event, queue = self._validate(raw)
            handles.append(EventHandle(self, event, queue))
            pending.setdefault(queue, []).append((event.id, self._message(event, queue)))
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
            calls.append([2, self._inflight_key, queue, *args])
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
                pipe.evalsha(self._admit.sha, *call)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self._admit.sha = str(self.redis.script_load(_ADMIT))
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------
    def handle(self, event_id: str) -> EventHandle:
        """A handle for an event emitted elsewhere (its data is not known here)."""
        return EventHandle(self, Event(id=event_id, type="unknown"), "")

    def result(self, event_id: str, timeout: float | None = 60.0) -> AgentResult:
        """Wait for an event's result; raises EventFailed (with the reason) or EventTimeout."""
        ar = self.app.AsyncResult(event_id)
        try:
            value = ar.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeoutError:
            raise EventTimeout(f"no result for event {event_id} within {timeout}s") from None
        if ar.failed():
            raise EventFailed(event_id, f"{type(value).__name__}: {value}")
        return AgentResult.model_validate(value)

    def close(self) -> None:
        """Release connections."""
        self.redis.close()
