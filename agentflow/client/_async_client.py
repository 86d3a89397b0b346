"""The asyncio producer: :class:`AsyncClient`, for FastAPI, aiohttp and other asyncio services.

The same events, validation, backpressure and errors as :class:`~agentflow.client.Client`
(both build on :class:`~agentflow.client._build.EventBuilder`), on redis-py's asyncio
client: emitting awaits one round trip per admission try, and every waiting
``handle.result()`` in the process shares one pub/sub connection
(:class:`~agentflow.client._async_results.AsyncResultWaiter`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, cast

import redis.asyncio as aredis
from celery import Celery
from redis.exceptions import NoScriptError, ResponseError

from agentflow._redis import schedule
from agentflow._redis.queues import agent_queue
from agentflow._redis.schedule import Delay
from agentflow.client._async_results import AsyncResultWaiter
from agentflow.client._build import (
    ADMIT,
    AdmitCall,
    Deadline,
    EventBuilder,
    HandleBase,
    Pending,
    check_timeout,
)
from agentflow.client._results import READY_STATES
from agentflow.config import Settings
from agentflow.errors import EventTimeout
from agentflow.models import AgentResult, Event


class AsyncEventHandle(HandleBase):
    """A published event, awaited from asyncio code."""

    def __init__(self, client: AsyncClient, event: Event, queue: str,
                 epoch: str | None = None) -> None:  # fmt: skip
        super().__init__(event, queue, epoch)
        self.client = client

    async def ready(self) -> bool:
        """True once the event has finished (successfully or not)."""
        return await self.client.state(self.id) in READY_STATES

    async def result(self, timeout: float | None = 60.0, *, follow: bool = False) -> AgentResult:
        """Wait for the agent's result; raises EventFailed (EventCancelled, ResultLost) or
        EventTimeout; with
        `follow`, the result at the end of its chain (``AgentResult.route``)."""
        return await self.client.result(self.id, timeout=timeout, epoch=self.epoch, follow=follow)

    async def cancel(self) -> bool:
        """Cancel the event (see :meth:`AsyncClient.cancel`)."""
        return await self.client.cancel(self.id)

    async def signal(self, name: str, payload: Any = None) -> bool:
        """Resume the event waiting for signal `name` (see :meth:`AsyncClient.signal`)."""
        return await self.client.signal(self.id, name, payload)

    async def stream(self, timeout: float | None = 60.0) -> AsyncIterator[Any]:
        """Items the event streams while it runs (LLM tokens, tool results), in order; one
        reader per event (what it has read is trimmed from Redis)."""
        from agentflow.streams import aiter_stream

        prefix = self.client.settings.broker.key_prefix
        async for item in aiter_stream(self.client.redis, self.id, prefix=prefix,
                                       timeout=timeout, done=self.ready, trim=True):  # fmt: skip
            yield item


class AsyncClient(EventBuilder):
    """Emit events and await their results from asyncio code.

    Use it from one event loop (``async with AsyncClient() as client: ...``), and close it
    on that loop.
    """

    def __init__(
        self,
        app: Celery | None = None,
        settings: Settings | None = None,
        redis_client: aredis.Redis | None = None,
    ) -> None:
        super().__init__(app, settings)
        if redis_client is None:
            from agentflow._redis.connection import open_async_redis

            # Commands packed by hiredis, as on the workers' asyncio clients: an event's
            # message is a kilobyte or more, and redis-py packs it in Python otherwise.
            redis_client = open_async_redis(
                self.app.conf.broker_url, self.settings,
                max_connections=self.settings.broker.producer_connections,
            )  # fmt: skip
        self.redis = redis_client
        # Imported here: importing agentflow for the sync Client stays small.
        from agentflow._redis.shared_connection import SharedConnection

        self.shared = SharedConnection(redis_client, self._replica_wait, "emit")
        """The connection every coroutine's admissions share."""
        self.results_redis = _results_client(self.app, redis_client, self.settings)
        prefix, keys = self._meta_prefix, self.keys
        self.results = AsyncResultWaiter(self.results_redis, lambda task_id: prefix + task_id,
                                         keys.epoch, keys.survivors,
                                         epochs=redis_client)  # fmt: skip
        self._epoch: str | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    # -- validating -------------------------------------------------------------------------
    async def _validate(self, event: Event | Mapping[str, Any]) -> tuple[Event, str]:
        event, name = self._resolve(event)
        if name not in self._known:
            await self._check_agent(name)
        return self._with_agent(event, name), agent_queue(name)

    async def _check_agent(self, name: str) -> None:
        from agentflow.agents.registry import agent_names

        if name in agent_names() or await cast(Any, self.redis.hexists(self._known_key, name)):
            self._known.add(name)
            return
        announced = {m.decode() for m in await cast(Any, self.redis.hkeys(self._known_key))}
        raise self._unknown(name, set(agent_names()) | announced)

    async def epoch(self) -> str:
        """The Redis epoch this client emits under (see :mod:`agentflow._worker.heartbeat`)."""
        if self._epoch is None:
            await self.redis.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
            raw = await self.redis.get(self.keys.epoch)
            self._epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
        return self._epoch

    # -- publishing ------------------------------------------------------------------------
    async def emit(self, event: Event | Mapping[str, Any], *, timeout: float | None = None,
                   delay: Delay | None = None,
                   at: datetime | float | None = None) -> AsyncEventHandle:  # fmt: skip
        """Validate and publish one event; returns its handle. `delay` or `at` schedule it
        (see :meth:`Client.emit <agentflow.client.Client.emit>`)."""
        return (await self.emit_many([event], timeout=timeout, delay=delay, at=at))[0]

    async def emit_many(self, events: Iterable[Event | Mapping[str, Any]], *,
                        timeout: float | None = None, delay: Delay | None = None,
                        at: datetime | float | None = None) -> list[AsyncEventHandle]:  # fmt: skip
        """Validate all events first, then publish them in one round trip (per admission
        try). At the backpressure bounds it waits (``backpressure = "block"``, up to
        `timeout` or ``backpressure_timeout``) or raises BackpressureError. With `delay` or
        `at`, schedule them all for that time (one round trip)."""
        due = schedule.due_time(delay, at)
        if due is not None and due <= time.time():
            due = None  # due already: sent now
        handles: list[AsyncEventHandle] = []
        pending: Pending = {}
        traced: dict[str, contextvars.Context] = {}
        epoch = await self.epoch()
        for raw in events:
            event, queue = await self._validate(raw)
            handles.append(AsyncEventHandle(self, event, queue, epoch))
            lane = self._lane(queue, event)
            message = self._message(event, queue, traced, enqueued_at=due)
            pending.setdefault(lane, []).append((event.id, message))
        if due is not None:
            if pending:
                await schedule.SCHEDULE.run_async(self.redis, *self._schedule_call(pending, due))
            self._published(handles, traced)
            return handles
        deadline = self._deadline(timeout)
        sent, delay = 0, 0.005
        while pending:
            order, calls = self._admission(pending)
            sent += self._admitted(pending, order, await self._admit_all(calls))
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise self._refused(pending, sent)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._published(handles, traced)
        return handles

    async def _admit_all(self, calls: list[AdmitCall],
                         before: list[list[Any]] | None = None) -> list[Any]:  # fmt: skip
        """The admission script once per lane, sent on the client's shared connection
        (:mod:`agentflow._redis.shared_connection`): the calls of every coroutine in one
        loop turn go out in one write, and none waits for another's replies. `before`:
        commands written just ahead of them (the gateway's record of the event). A call
        Redis did not run because it does not know the script is sent again once it is
        loaded; a lost connection is retried on redis-py's schedule (a resent admission can
        queue an event twice; its worker runs it once)."""
        lead = len(before or ())
        commands = [*(before or ()), *(ADMIT.command(*call) for call in calls)]
        replies = await self.shared.execute(commands)
        missing = [i for i in range(lead, lead + len(calls))
                   if isinstance(replies[i], NoScriptError)]  # fmt: skip
        if missing:
            await self.redis.script_load(ADMIT.text)
            again = await self.shared.execute([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies[lead:]

    # -- results ---------------------------------------------------------------------------
    def handle(self, event_id: str) -> AsyncEventHandle:
        """A handle for an event emitted elsewhere (its data is not known here)."""
        return AsyncEventHandle(self, Event(id=event_id, type="unknown"), "")

    async def state(self, event_id: str) -> str:
        """The event's Celery state: PENDING (queued or running), SUCCESS, FAILURE,
        REVOKED (cancelled), or RETRY."""
        raw = await self.results_redis.get(self._meta_prefix + event_id)
        if raw is None:
            return "PENDING"
        return str(json.loads(raw).get("status", "PENDING"))

    async def result(self, event_id: str, timeout: float | None = 60.0,
                     epoch: str | None = None, *, follow: bool = False) -> AgentResult:  # fmt: skip
        """Wait for an event's result; raises EventFailed (with the reason; EventCancelled
        for a cancelled event, ResultLost when Redis lost it) or EventTimeout. With
        `follow`, wait for the end of its chain (see :meth:`Client.result
        <agentflow.client.Client.result>`)."""
        check_timeout(timeout)
        deadline = Deadline(timeout)
        while True:
            try:
                meta = await self.results.wait(event_id, deadline.left(), epoch)
            except TimeoutError:
                raise EventTimeout(f"no result for event {event_id} within {timeout}s") from None
            result = self._outcome(event_id, meta)
            if not (follow and result.next_events):
                return result
            event_id = result.next_events[0]

    async def cancel(self, event_id: str) -> bool:
        """Cancel an event wherever it is (see :meth:`Client.cancel
        <agentflow.client.Client.cancel>`). False when it had already finished."""
        await self.redis.set(self.keys.cancel(event_id), 1,
                             ex=int(self.settings.broker.result_expires))  # fmt: skip
        if await schedule.UNSCHEDULE.run_async(self.redis, *self._unschedule_call(event_id)):
            return True  # a delayed event: due now, and its worker marks it cancelled
        if await self._resume(event_id, "", None):
            return True  # a waiting event: resumed, and its worker marks it cancelled
        if await self.state(event_id) in READY_STATES:
            return False
        # Celery's control commands publish through kombu, which blocks: on a thread.
        await asyncio.to_thread(self._broadcast_cancel, event_id)
        return True

    async def signal(self, event_id: str, name: str, payload: Any = None) -> bool:
        """Resume an event that waits for signal `name` (see :meth:`Client.signal
        <agentflow.client.Client.signal>`); True when this call resumed it."""
        return await self._resume(event_id, name, payload)

    async def _resume(self, event_id: str, name: str, payload: Any) -> bool:
        record = await cast(Any, self.redis.hmget(self.keys.wait(event_id), self._wait_fields()))
        call = self._signal_call(event_id, name, payload, list(record))
        if call is None:
            return False
        from agentflow._redis.waits import SIGNAL

        return bool(await SIGNAL.run_async(self.redis, *call))

    async def close(self) -> None:
        """Stop waiting for results and release the connections."""
        await self.results.close()
        await self.shared.aclose()
        if self.results_redis is not self.redis:
            await self.results_redis.aclose()
        await self.redis.aclose()


def _results_client(app: Celery, broker: aredis.Redis, settings: Settings) -> aredis.Redis:
    """An asyncio client on the result backend's Redis: `broker` when it is the same
    database."""
    from celery.backends.redis import RedisBackend

    from agentflow._redis.connection import open_async_redis
    from agentflow._redis.publish import same_redis

    backend = app.backend
    if not isinstance(backend, RedisBackend) or same_redis(backend.client, broker):
        return broker
    return open_async_redis(str(app.conf.result_backend), settings, max_connections=16)
