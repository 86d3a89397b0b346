"""What :class:`~agentflow.client.Client` and :class:`~agentflow.client.AsyncClient` share:
validating events, building their Celery messages, the admission script's calls, and
reading a result entry. Nothing here does I/O; each client does its own (blocking or
asyncio)."""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery, signals
from pydantic import ValidationError

from agentflow._redis import schedule
from agentflow._redis.doorbell import QUEUES_KEY, WAKE_LIMIT, wake_key
from agentflow._redis.keys import Keys
from agentflow._redis.messages import ENQUEUED_AT_HEADER, encode_body, envelope, origin, short_repr
from agentflow._redis.queues import RUN_EVENT_TASK, SIGNAL_TASK
from agentflow._redis.routes import resolve_agent
from agentflow._redis.scripts import Script
from agentflow.config import Settings, get_settings
from agentflow.errors import (
    BackpressureError,
    EventCancelled,
    EventFailed,
    InvalidEvent,
    UnknownAgent,
)
from agentflow.models import AgentResult, Event

ADMIT = Script("admit")
"""The admission script: pushes a queue's events unless the backpressure bounds are reached."""

Pending = dict[str, list[tuple[str, str]]]
"""Messages still to admit: lane → [(event id, queue item), ...]; a lane is a queue, or
``<queue>\n<tenant>`` for the events of a tenant with a cap (:meth:`EventBuilder._lane`)."""
AdmitCall = tuple[list[str], list[Any]]
"""One admission script call: its keys (four; six for a capped tenant's lane) and args."""


class HandleBase:
    """What both handles hold: the event, its queue, the epoch it was emitted under."""

    def __init__(self, event: Event, queue: str, epoch: str | None = None) -> None:
        self.event = event
        self.queue = queue
        self.epoch = epoch
        """The Redis epoch the event was emitted under (a later one means it may be lost)."""

    @property
    def id(self) -> str:
        """The event id, which is also its Celery task id."""
        return self.event.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} → {self.queue}>"


class EventBuilder:
    """Validation, messages and result reading for one app and its settings."""

    def __init__(self, app: Celery | None, settings: Settings | None) -> None:
        if app is None:
            from agentflow.celery_app import app as default_app

            app = default_app
        self.app = app
        self.settings = settings or get_settings()
        self.keys = keys = Keys(self.settings.broker.key_prefix)
        self._inflight_key = keys.inflight
        self._known_key = keys.agents
        self._known: set[str] = set()
        runner = self.settings.runner
        self._inflight_ttl = runner.hard_time_limit + 2 * runner.visibility_timeout
        self._meta_prefix = bytes(app.backend.task_keyprefix).decode()
        from agentflow._redis.replication import replica_wait

        self._replica_wait = replica_wait(self.settings)

    def _resolve(self, event: Event | Mapping[str, Any]) -> tuple[Event, str]:
        """The event, validated, and the name of its agent (not yet checked to be served)."""
        if not isinstance(event, Event):
            try:
                event = Event.model_validate(dict(event))
            except ValidationError as exc:
                raise InvalidEvent(f"invalid event: {exc}", exc.errors()) from None
        try:
            name = resolve_agent({"agent": event.agent, "type": event.type}, self.settings)
        except UnknownAgent as exc:
            raise InvalidEvent(str(exc)) from None
        return event, name

    @staticmethod
    def _with_agent(event: Event, name: str) -> Event:
        return event if event.agent is not None else event.model_copy(update={"agent": name})

    @staticmethod
    def _unknown(name: str, known: set[str]) -> UnknownAgent:
        return UnknownAgent(
            f"no worker serves agent {name!r}: register it (@agent) and start a worker "
            f"(known: {sorted(known)})"
        )

    def _message(self, event: Event, queue: str,
                 traced: dict[str, contextvars.Context] | None = None,
                 enqueued_at: float | None = None) -> str:  # fmt: skip
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
        # A delayed event counts as enqueued when it is due (queue-wait metrics, the janitor).
        headers[ENQUEUED_AT_HEADER] = time.time() if enqueued_at is None else enqueued_at
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

    def _lane(self, queue: str, event: Event) -> str:
        """The admission lane of `event`: its queue, or queue and tenant when the tenant's
        events in flight are capped (``[tenants]``)."""
        tenant = event.tenant
        if tenant is None or self.settings.tenants.limit(tenant) is None:
            return queue
        return f"{queue}\n{tenant}"

    def _admission(self, pending: Pending) -> tuple[list[str], list[AdmitCall]]:
        """The admission script's calls for `pending`, one per lane: (lanes, calls)."""
        runner = self.settings.runner
        now = time.time()
        order = list(pending)
        calls: list[AdmitCall] = []
        for lane in order:
            queue, _, tenant = lane.partition("\n")
            items = pending[lane]
            args: list[Any] = [now, now + self._inflight_ttl, runner.max_concurrent_events,
                               runner.event_buffer_size, len(items)]  # fmt: skip
            for event_id, message in items:
                args += [event_id, message]
            args.append(WAKE_LIMIT)
            keys = [self._inflight_key, queue, wake_key(queue), QUEUES_KEY]
            if tenant:  # the tenant's slots and parked list, and its cap
                keys += [self.keys.tenant_slots(tenant), self.keys.tenant_parked(tenant)]
                args.append(self.settings.tenants.limit(tenant) or 0)
            calls.append((keys, args))
        return order, calls

    def _confirmed(self, waited: bool, replies: list[Any]) -> list[Any]:
        """The admission replies of a pipeline, its closing WAIT (when `waited`) taken off
        and checked."""
        if waited and self._replica_wait is not None:
            self._replica_wait.check(replies.pop(), "emit")
        return replies

    @staticmethod
    def _admitted(pending: Pending, order: list[str], replies: list[Any]) -> int:
        """Drop what the admission script took from `pending`; how many it took."""
        sent = 0
        for queue, (admitted, _inflight, _queued) in zip(order, replies, strict=True):
            admitted = int(admitted)
            sent += admitted
            rest = pending[queue][admitted:]
            if rest:
                pending[queue] = rest
            else:
                del pending[queue]
        return sent

    def _schedule_call(self, pending: Pending, due: float) -> tuple[list[str], list[Any]]:
        """The schedule script's keys and arguments: every pending message due at `due`, for
        its lane's queue (a delayed event is not held to its tenant's cap when it is due)."""
        items = [(event_id, due, schedule.entry(lane.partition("\n")[0], message, event_id))
                 for lane, messages in pending.items() for event_id, message in messages]  # fmt: skip
        return [self.keys.scheduled, self.keys.scheduled_items], schedule.schedule_args(items)

    def _unschedule_call(self, event_id: str) -> tuple[list[str], list[Any]]:
        """The unschedule script's keys and arguments for a cancelled event."""
        return [self.keys.scheduled, self.keys.scheduled_items], [event_id]

    def _wait_fields(self) -> list[str]:
        """The fields of a wait record that :meth:`_signal_call` reads (HMGET them)."""
        return ["status", "signal", "token", "queue"]

    def _signal_call(self, event_id: str, name: str, payload: Any,
                     record: list[Any]) -> tuple[list[str], list[Any]] | None:  # fmt: skip
        """The signal script's keys and arguments that resume `event_id` with signal `name`
        (``""``: any, for a cancel), given its wait record (:meth:`_wait_fields`); None when
        it does not wait for that signal."""
        status, awaited, token, queue = (v.decode() if isinstance(v, bytes) else v
                                         for v in record)  # fmt: skip
        if status != "waiting" or not token or not queue or (name and awaited != name):
            return None
        from agentflow._redis import waits  # on first use: a producer import stays small

        args = (event_id, token, waits.signal_args(name or str(awaited), payload))
        try:
            body = encode_body(list(args), {}, {"callbacks": None, "errbacks": None,
                                                "chain": None, "chord": None})  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise InvalidEvent(f"signal payload for event {event_id} is not JSON: {exc}") from None
        if len(body) > self.settings.runner.max_event_bytes:
            raise InvalidEvent(f"signal payload for event {event_id} is {len(body)} bytes; "
                               f"max_event_bytes={self.settings.runner.max_event_bytes}")  # fmt: skip
        msg = self.app.amqp.as_task_v2(
            event_id, SIGNAL_TASK, args=args, kwargs={}, time_limit=None, soft_time_limit=None,
            argsrepr=short_repr(args), kwargsrepr="{}", origin=origin(), root_id=event_id,
        )  # fmt: skip
        headers = dict(msg.headers)
        headers[ENQUEUED_AT_HEADER] = time.time()
        item = envelope(headers, dict(msg.properties), body, queue)
        keys = [self.keys.wait(event_id), self.keys.scheduled, self.keys.scheduled_items, queue,
                wake_key(queue), QUEUES_KEY]  # fmt: skip
        return keys, [name, token, item, WAKE_LIMIT, schedule.timeout_member(event_id)]

    def _deadline(self, timeout: float | None) -> float:
        runner = self.settings.runner
        wait = runner.backpressure_timeout if timeout is None else timeout
        return time.monotonic() + (wait if runner.backpressure == "block" else 0.0)

    def _refused(self, pending: Pending, sent: int) -> BackpressureError:
        runner = self.settings.runner
        lane, items = next(iter(pending.items()))
        queue = lane.partition("\n")[0]
        return BackpressureError(
            f"backpressure: {len(items)} event(s) for {queue} not admitted "
            f"(max_concurrent_events={runner.max_concurrent_events}, "
            f"event_buffer_size={runner.event_buffer_size}); {sent} sent",
            sent=sent,
        )

    @staticmethod
    def _published(handles: Iterable[Any], traced: dict[str, contextvars.Context]) -> None:
        """``after_task_publish`` for each published event, in its own publish context."""
        if not signals.after_task_publish.receivers:
            return
        for handle in handles:
            ctx = traced.get(handle.id)
            ctx = contextvars.copy_context() if ctx is None else ctx
            ctx.run(functools.partial(
                signals.after_task_publish.send, sender=RUN_EVENT_TASK, body=None,
                headers={"id": handle.id, "task": RUN_EVENT_TASK}, exchange="",
                routing_key=handle.queue,
            ))  # fmt: skip

    def _broadcast_cancel(self, event_id: str) -> None:
        """Revoke the event's task (terminating a run) and tell every worker to cancel its
        tool calls (Celery's control commands; they block while kombu publishes)."""
        control = self.app.control
        control.revoke(event_id, terminate=True)
        control.broadcast("agentflow_cancel", arguments={"event_id": event_id})

    @staticmethod
    def _outcome(event_id: str, meta: dict[str, Any]) -> AgentResult:
        """The agent's result from a ready result entry, or the error it ended with."""
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


class Deadline:
    """What is left of a wait of `timeout` seconds (None: no limit) across several waits."""

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds left (never below 0), or None without a limit."""
        return None if self._at is None else max(0.0, self._at - time.monotonic())


def check_timeout(timeout: float | None) -> None:
    """Refuse a result timeout that is not a number of seconds >= 0."""
    if timeout is not None and (timeout != timeout or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")


def _message_of(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
