"""The event pipeline: what a worker does with an event, a continuation or a tool call.

One async path, whatever runs it: the worker's pool (:mod:`agentflow._worker.asyncio_pool`) runs it
on the process's event loop, and the Celery task bodies (prefork, ``pool = "threads"``)
run the same coroutines on their process's loop. For an event (`agentflow.run_event`):

1. Parse the event and find its agent; anything that cannot run is dead-lettered with its
   reason (:meth:`EventRunner.parse`).
2. Begin (one Lua round trip, ``lua/begin.lua``): the stored result if the event already
   finished, "cancelled", or a claim. The claim is a lease held by this run and renewed
   while it runs (:class:`ClaimRenewer`), so a second delivery of the same event never runs
   beside a live one, however long the agent takes.
3. Load the session state; run the agent under its time limit (async: cancelled; sync:
   stopped on a helper thread, see :mod:`agentflow._worker.stoppable`).
4. Finish (one round trip, ``lua/finish.lua``): the result and the state delta are stored
   once (the first run to finish wins), Celery's result entry is written and published,
   and the message is settled — or, when the agent asked for tools, the chord that replaces
   the task is sent in one transaction (:mod:`agentflow.tools.fanout`).

Every Redis call here is async (the loop's client, batched per loop turn where it pays).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from agentflow import context as run_context
from agentflow import hooks
from agentflow._redis.connection import get_async_redis
from agentflow._redis.doorbell import QUEUES_KEY, WAKE_LIMIT, WAKE_PREFIX, ring, wake_key
from agentflow._redis.keys import Keys
from agentflow._redis.messages import ENQUEUED_AT_HEADER
from agentflow._redis.queues import AGENT_QUEUE_PREFIX, SIGNAL_TASK, agent_queue
from agentflow._redis.replication import replica_wait
from agentflow._redis.routes import resolve_agent
from agentflow._redis.script_batch import ScriptBatch
from agentflow._redis.scripts import Script
from agentflow._worker import stoppable
from agentflow.agents.base import Agent, to_result
from agentflow.agents.registry import get_agent
from agentflow.config import Settings, get_settings
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import (
    AgentError,
    EventRefused,
    EventRejected,
    InvalidEvent,
    LLMUnavailable,
    RateLimited,
    UnknownAgent,
)
from agentflow.metrics import get_metrics
from agentflow.models import AgentResult, Event, Signal, WaitFor
from agentflow.state import State, StateStore
from agentflow.timeline import Steps
from agentflow.tools.calls import CallTools, ToolResult

log = logging.getLogger("agentflow.run_event")

_EMPTY_STATE = State({})
_LLM_UNAVAILABLE = "LLM unavailable: "
_RATE_LIMITED = "LLM unavailable (rate limited): "
_BEGIN, _FINISH, _RELEASE, _RENEW, _TENANT_RELEASE, _GATE, _TRACE = (
    Script(n)
    for n in ("begin", "finish", "release", "renew", "tenant_release", "agent_gate", "trace")
)


class RetryLater(Exception):
    """The event should run again after `countdown` seconds (its LLM is unavailable, its
    retry policy says so, or its agent's gate is closed for now)."""

    def __init__(self, reason: str, countdown: float, *, quiet: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown
        self.quiet = quiet
        """True when the event only waits (a rate limit or a concurrency cap): no RETRY
        state is stored and no task_retry signal is sent for it."""


@dataclass
class Job:
    """One Celery request's work, as the runner needs it."""

    task_id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    queue: str | None
    meta: ResultMeta | None = None
    """Write Celery's result entry in the finish script (the pool path lets Celery do it)."""
    settle: tuple[str, str, str] | None = None
    """kombu's unacked hash, index and the delivery tag: settle the message in the same
    script that stores the result (its ack then needs no round trip)."""
    cancelled: bool = False
    send_fan_out: bool = True
    """False: a fan-out is built but not sent; the caller replaces its task with it
    (``Task.replace``, which keeps the chain an orchestration step belongs to)."""


class Done:
    """The work finished; `result` is what the producer gets (an AgentResult as JSON).

    Made from the result's JSON text, the result is decoded only when something reads it
    (a signal receiver, the log line, task events): a stored result needs only the text."""

    __slots__ = ("_result", "encoded", "replayed", "settled")

    def __init__(self, result: Any = None, *, encoded: str | bytes | None = None,
                 replayed: bool = False, settled: bool = False) -> None:  # fmt: skip
        self._result = result
        self.encoded = encoded
        """The result as JSON text, when it was made from that."""
        self.replayed = replayed
        """True when the result came from an earlier run (a redelivery or a duplicate)."""
        self.settled = settled
        """True when the finish script removed the message's unacked records."""

    @property
    def result(self) -> Any:
        """The result as JSON values (dicts, lists, ...)."""
        if self._result is None and self.encoded is not None:
            self._result = json.loads(self.encoded)
        return self._result

    def __repr__(self) -> str:
        return f"Done(replayed={self.replayed}, settled={self.settled})"


@dataclass
class FannedOut:
    """The agent asked for tools: the chord that replaces this task has been sent (or, with
    ``Job.send_fan_out`` false, is `signature`, for the caller to send)."""

    calls: int
    settled: bool = False
    signature: Any = None


@dataclass
class Revoked:
    """The event was cancelled (``Client.cancel``) before or while it ran."""

    reason: str = "cancelled"


@dataclass
class Suspended:
    """The agent returned ``WaitFor``: the event waits for its signal in Redis and this
    request ends (acked, its slot free); or a resume message that no longer applies."""

    settled: bool = False
    stale: bool = False


Outcome = Done | FannedOut | Revoked | Suspended


@dataclass
class Begun:
    """An event that passed validation and holds its claim."""

    event: Event
    agent: Agent
    raw: Any
    job: Job
    started: float
    done_key: str
    claim_key: str
    run_id: str
    step: int = 0
    starts: int = 1
    loaded: float = 0.0
    steps: Steps | None = None
    """This run's trace, when tracing is on."""
    waits: int = 0
    """How many times this event has suspended (``WaitFor``) before this run."""


@dataclass
class ResultMeta:
    """Celery's result-backend entry for a task, written by the finish script.

    The script writes ``head + <result JSON> + tail`` to `key` with `ttl` and publishes it
    on the channel of the same name, as Celery's Redis backend does; the fields are those
    of ``backend._get_result_meta`` (a contract test compares them).
    """

    key: str
    task_id: str
    ttl: int
    extra: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> tuple[str, str, str]:
        """(key, head, tail) of the entry."""
        extra = json.dumps(self.extra, separators=(",", ":"), default=str)[1:-1] \
            if self.extra else ""  # fmt: skip
        tail = (f',"traceback":null,"children":[],"date_done":"{_now_iso()}",'
                f'{extra + "," if extra else ""}"task_id":{json.dumps(self.task_id)}}}')  # fmt: skip
        return self.key, '{"status":"SUCCESS","result":', tail

    @classmethod
    def for_request(
        cls, backend: Any, task_id: str, request: dict[str, Any], ttl: int
    ) -> ResultMeta:
        """The entry Celery's backend would write for the request `request` (its dict)."""
        extra: dict[str, Any] = {}
        if request.get("group"):
            extra["group_id"] = request["group"]
        if request.get("parent_id"):
            extra["parent_id"] = request["parent_id"]
        if _extended(backend):
            info = request.get("delivery_info") or {}
            extra.update(name=request.get("task"), args=request.get("args"),
                         kwargs=request.get("kwargs"), worker=request.get("hostname"),
                         retries=request.get("retries"),
                         queue=info.get("routing_key") if info else None)  # fmt: skip
        return cls(backend.get_key_for_task(task_id).decode(), task_id, ttl, extra)


_second: tuple[int, str] = (-1, "")
"""The last whole second :func:`_now_iso` formatted, and its text."""


def _now_iso() -> str:
    """``datetime.now(UTC).isoformat()``, as Celery writes ``date_done`` (the seconds part
    formatted once per second)."""
    global _second
    now = time.time()
    whole = int(now)
    second = _second
    if whole != second[0]:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1e6):06d}+00:00"


_extended_by_app: dict[int, bool] = {}


def _extended(backend: Any) -> bool:
    """``result_extended`` of the backend's app, read once (Celery's lookup is slow)."""
    key = id(backend.app)
    value = _extended_by_app.get(key)
    if value is None:
        value = _extended_by_app[key] = bool(
            backend.app.conf.find_value_for_key("extended", "result")
        )
    return value


class ClaimRenewer:
    """Renews the claims of the events this process is running, in one script call per
    round (every third of the lease)."""

    def __init__(self, runner: EventRunner) -> None:
        self.runner = runner
        self.held: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, begun: Begun) -> None:
        """Keep `begun`'s claim alive until :meth:`release`."""
        self.held[begun.claim_key] = begun.run_id
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew())

    def release(self, begun: Begun) -> None:
        """Stop renewing `begun`'s claim."""
        if self.held.get(begun.claim_key) == begun.run_id:
            del self.held[begun.claim_key]

    async def _renew(self) -> None:
        lease = self.runner.claim_ttl
        while self.held:
            await asyncio.sleep(max(0.5, lease / 3))
            held = dict(self.held)
            if not held:
                break
            try:
                await _RENEW.run_async(get_async_redis(), list(held), [lease, *held.values()])
            except Exception:
                log.warning("renewing %d claims failed; retrying", len(held), exc_info=True)


class EventRunner:
    """Per-process state of the event pipeline: settings, keys, stores, scripts."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or get_settings()
        self.keys = Keys(s.broker.key_prefix)
        self.states = StateStore(
            None,
            prefix=s.broker.key_prefix,
            ttl=s.memory.state_cache_ttl,
            cache_size=s.memory.state_cache_size,
            compress=s.memory.enable_state_compression,
            compression_threshold=s.memory.compression_threshold,
        )
        self.claim_ttl = max(1, int(s.runner.claim_ttl))
        self.deliveries_ttl = int(s.broker.result_expires)
        self.result_ttl = int(s.broker.result_expires)
        self._trace_ttl = int(s.monitoring.trace_ttl)
        self._capped_agents = {n for n, p in s.agents.policies.items() if p.max_concurrency}
        self._capped_tenants = s.tenants.max_in_flight is not None or bool(s.tenants.limits)
        self._event_builder: Any = None
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self.threads = stoppable.StoppableThreads(
            "agent", max_abandoned=s.runner.max_stuck_threads, on_too_many=_too_many_stuck
        )
        self._renewers: dict[int, ClaimRenewer] = {}
        self._batches: dict[int, ScriptBatch] = {}

    # -- per-loop helpers ----------------------------------------------------------------
    def batch(self) -> ScriptBatch:
        """The running loop's batch of begin/finish calls."""
        loop = asyncio.get_running_loop()
        batch = self._batches.get(id(loop))
        if batch is None or batch.loop is not loop:
            batch = self._batches[id(loop)] = ScriptBatch(get_async_redis(),
                                                          replica_wait(self.settings))  # fmt: skip
        return batch

    def renewer(self) -> ClaimRenewer:
        """The running loop's claim renewer."""
        loop_id = id(asyncio.get_running_loop())
        renewer = self._renewers.get(loop_id)
        if renewer is None:
            renewer = self._renewers[loop_id] = ClaimRenewer(self)
        return renewer

    def timeout_of(self, agent: Agent) -> float:
        """Seconds `agent` may run: its policy's timeout, its own, else event_timeout."""
        return float(self.settings.agents.policy(agent.name).timeout or agent.timeout
                     or self.settings.runner.event_timeout)  # fmt: skip

    def dlq(self) -> DeadLetterQueue:
        """The dead-letter queue, on the loop's client."""
        return DeadLetterQueue(get_async_redis(), self.keys.prefix)

    # -- steps ---------------------------------------------------------------------------
    async def dead_letter(
        self, reason: str, raw: Any, task_id: str | None, queue: str | None, source: str,
        category: str | None = None,
    ) -> EventRejected:  # fmt: skip
        """Store the event in the DLQ — or, when ``[error_routing]`` names a handler for
        `category`, send it to that agent — and return the exception the task fails with."""
        routed = await self._route_failure(reason, raw, task_id, queue, category)
        if routed is not None:
            return EventRejected(routed)
        event = raw if isinstance(raw, dict) else None
        await self.dlq().push_async(reason, event=event, raw=None if event is not None else raw,
                                    task_id=task_id, queue=queue, source=source)  # fmt: skip
        log.warning("event %s dead-lettered: %s", task_id, reason)
        return EventRejected(reason)

    async def _route_failure(self, reason: str, raw: Any, task_id: str | None,
                             queue: str | None, category: str | None) -> str | None:  # fmt: skip
        """Send the failure to its category's handler agent; the reason the failed task
        ends with, or None when it is not routed (no handler, a handler's own event, or
        the handler event could not be sent: the caller dead-letters it)."""
        handler = self.settings.error_routing.handler(category)
        if handler is None or category is None:
            return None
        from agentflow import error_routing

        if error_routing.is_handler_event(raw):
            return None  # a handler's event failed: dead-lettered, so a loop is cut here
        try:
            event = error_routing.handler_event(handler, category, reason, raw, task_id, queue)
            handler_queue = agent_queue(handler)
            message = self._builder()._message(event, handler_queue)
            pipe = get_async_redis().pipeline(transaction=True)
            pipe.lpush(handler_queue, message)
            ring(pipe, [handler_queue])
            await pipe.execute()
        except Exception:
            log.exception("routing the %s failure of event %s to agent %r failed; "
                          "dead-lettering it", category, task_id, handler)  # fmt: skip
            return None
        log.warning("event %s failed (%s) and was routed to agent %r as event %s: %s",
                    task_id, category, handler, event.id, reason)  # fmt: skip
        return f"{reason} (routed to agent {handler!r} as event {event.id})"

    def parse(self, raw: Any, queue: str | None) -> tuple[Event, Agent]:
        """Validate the wire event and find its agent (ValueError, UnknownAgent).

        On an agent's own queue (``agentflow.agent.<name>``) the queue decides: an event
        that names no agent runs `<name>`, and one that names another agent is refused (it
        was sent to the wrong queue). Elsewhere the event's `agent`, else its route.
        """
        if not isinstance(raw, dict):
            raise ValueError(f"an event must be a JSON object, got {type(raw).__name__}")
        event = Event.model_validate(raw)
        if queue and queue.startswith(AGENT_QUEUE_PREFIX):
            owner = queue[len(AGENT_QUEUE_PREFIX) :]
            if event.agent is not None and event.agent != owner:
                raise ValueError(
                    f"event for agent {event.agent!r} arrived on {queue}, the queue of agent "
                    f"{owner!r}: a worker runs only the agent whose queue an event is on"
                )
            name = owner
        else:
            name = resolve_agent(raw, self.settings)
        if event.agent is None:
            event.agent = name
        return event, get_agent(name)

    async def _begin(self, raw: Any, job: Job, step: int) -> Begun | Done | Revoked:
        """Validate and claim; raises EventRejected (dead-lettered) or RetryLater."""
        started = time.time()
        try:
            event, agent = self.parse(raw, job.queue)
        except ValidationError as exc:
            reason = "invalid event: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()
            )
            raise await self.dead_letter(reason, raw, job.task_id, job.queue, "worker",
                                         "validation") from None  # fmt: skip
        except (ValueError, UnknownAgent) as exc:
            raise await self.dead_letter(str(exc), raw, job.task_id, job.queue,
                                         "worker", "validation") from None  # fmt: skip
        if step == 0:
            await self._gate(event, agent)
        keys = self.keys
        begun = Begun(event, agent, raw, job, started, keys.done(event.dedup_key),
                      keys.claim(event.dedup_key), _run_id(), step)  # fmt: skip
        status, value = await self.batch().call(
            _BEGIN,
            [begun.done_key, begun.claim_key, keys.deliveries(job.task_id, step),
             keys.cancel(event.id)],
            [begun.run_id, self.claim_ttl, self.deliveries_ttl],
        )  # fmt: skip
        if status == 1:  # already finished: a redelivery, or a duplicate idempotency key
            return Done(encoded=value, replayed=True)
        if status == 3:
            return Revoked()
        if status == 2:
            raise RetryLater(f"event {event.dedup_key} is running elsewhere", countdown=1.0)
        begun.starts = int(value)
        retry = self.settings.agents.policy(agent.name).retry
        limit = max(self.settings.runner.max_redeliveries, retry.attempts if retry else 0)
        if begun.starts > limit:
            await self._release(begun)
            last = await get_async_redis().get(keys.retry_reason(job.task_id))
            last_error = last.decode(errors="replace") if last else ""
            category = (
                "rate_limited"
                if last_error.startswith(_RATE_LIMITED)
                else "llm_unavailable"
                if last_error.startswith(_LLM_UNAVAILABLE)
                else None
            )
            raise await self.dead_letter(
                f"started {begun.starts - 1} times without finishing (worker lost or retried "
                f"each time); max_redeliveries={limit}"
                f"{'; last error: ' + last_error if last_error else ''}",
                raw, job.task_id, job.queue, "worker", category,
            )  # fmt: skip
        return begun

    async def _gate(self, event: Event, agent: Agent) -> None:
        """The agent's rate limit and cluster-wide cap (``[agents.<name>]``): RetryLater
        (quietly) when the event must wait; its slot is taken when it may start."""
        policy = self.settings.agents.policy(agent.name)
        if policy.rate_limit is None and policy.max_concurrency is None:
            return
        keys, runner, now = self.keys, self.settings.runner, time.time()
        wait = await self.batch().call(_GATE, [
            keys.agent_rate(agent.name) if policy.rate_limit else "",
            keys.agent_slots(agent.name) if policy.max_concurrency else ""],
            [now, policy.rate_limit or 0, event.id, policy.max_concurrency or 0,
             now + runner.hard_time_limit + 2 * runner.visibility_timeout])  # fmt: skip
        seconds = float(wait)
        if seconds > 0:
            raise RetryLater(f"agent {agent.name!r} is at its rate limit "
                             f"({policy.rate_limit:g}/s)", seconds, quiet=True)  # fmt: skip
        if seconds < 0:
            raise RetryLater(f"agent {agent.name!r} has max_concurrency="
                             f"{policy.max_concurrency} events in flight",
                             0.05 + random.random() * 0.2, quiet=True)  # fmt: skip

    async def _release(self, begun: Begun, *, done: bool = True) -> None:
        """Give up the claim; with `done`, the event also leaves the events in flight."""
        await _RELEASE.run_async(get_async_redis(), [begun.claim_key, self.keys.inflight],
                                 [begun.event.id, begun.run_id, "1" if done else "0"])  # fmt: skip

    async def load_state(self, begun: Begun) -> State:
        """The event's session state (empty without a session)."""
        session = begun.event.session_id
        state = await self.states.load_async(self.batch().command, session) if session \
            else _EMPTY_STATE  # fmt: skip
        begun.loaded = time.time()
        return state

    async def _call_agent(self, begun: Begun, fn: Callable[..., Any], is_async: bool,
                          *args: Any) -> Any:  # fmt: skip
        """``fn(*args)`` under the agent's time limit: async code is cancelled, blocking
        sync code runs on a stoppable thread, non-blocking sync code under a watchdog."""
        agent = begun.agent
        timeout = self.timeout_of(agent)
        ctx = run_context.RunContext(begun.event.id, begun.job.task_id, agent.name,
                                     time.monotonic() + timeout, begun.steps)  # fmt: skip
        token = run_context.enter(ctx)
        try:
            if is_async:
                value = await asyncio.wait_for(_awaited(fn(*args)), timeout)
            elif not agent.blocking:
                value = stoppable.guarded(fn, args, timeout)
            else:
                value = await self.threads.run(fn, *args, timeout=timeout, on_cancel=ctx.cancel)
            if inspect.isawaitable(value):
                value = await asyncio.wait_for(_awaited(value), ctx.remaining())
        except stoppable.Stopped:
            raise TimeoutError(timeout) from None
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        finally:
            run_context.leave(token)
        if isinstance(value, CallTools | WaitFor):
            return value
        return to_result(value, begun.event, agent.name)

    async def failure(self, begun: Begun, exc: BaseException) -> Exception:
        """What the task raises for an agent that failed: RetryLater, or a dead letter."""
        _event, agent, job = begun.event, begun.agent, begun.job
        await self._release(begun)
        retry = self.settings.agents.policy(agent.name).retry
        if retry is not None:
            return await self._by_policy(begun, exc, retry)
        if isinstance(exc, LLMUnavailable):
            # Kept so that the dead letter says why (and its category), if retries run out.
            said = _RATE_LIMITED if isinstance(exc, RateLimited) else _LLM_UNAVAILABLE
            await get_async_redis().set(self.keys.retry_reason(job.task_id),
                                        f"{said}{exc}"[:1000],
                                        ex=self.deliveries_ttl)  # fmt: skip
            countdown = exc.retry_after or min(60.0, 2.0 ** min(begun.starts, 6))
            return RetryLater(f"{said}{exc}", countdown)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            timeout = self.timeout_of(agent)
            reason = f"agent {agent.name!r} timed out after {timeout:g}s"
            return await self.dead_letter(reason, begun.raw, job.task_id, job.queue, "agent",
                                          "timeout")  # fmt: skip
        from agentflow.error_routing import category_of

        reason = f"agent {agent.name!r} raised {type(exc).__name__}: {exc}"
        rejected = await self.dead_letter(reason, begun.raw, job.task_id, job.queue, "agent",
                                          category_of(exc))  # fmt: skip
        return AgentError(rejected.reason)

    async def _by_policy(self, begun: Begun, exc: BaseException, retry: Any) -> Exception:
        """A failure under the agent's retry policy (``[agents.<name>.retry]``): run again
        after its backoff while attempts are left and the category is retried, else fail."""
        from agentflow.error_routing import category_of

        agent, job = begun.agent, begun.job
        category = category_of(exc)
        described = (f"agent {agent.name!r} timed out after {self.timeout_of(agent):g}s"
                     if category == "timeout" else
                     f"agent {agent.name!r} raised {type(exc).__name__}: {exc}")  # fmt: skip
        if category in retry.on and begun.starts < retry.attempts:
            await get_async_redis().set(self.keys.retry_reason(job.task_id),
                                        described[:1000], ex=self.deliveries_ttl)  # fmt: skip
            return RetryLater(f"{described} (run {begun.starts} of {retry.attempts})",
                              retry.wait(begun.starts))  # fmt: skip
        if category in retry.on:
            described += f" (run {begun.starts} of {retry.attempts}: no attempts left)"
        rejected = await self.dead_letter(described, begun.raw, job.task_id, job.queue, "agent",
                                          category)  # fmt: skip
        return rejected if category == "timeout" else AgentError(rejected.reason)

    async def _chained(self, begun: Begun, result: AgentResult) -> list[tuple[str, str, str]]:
        """The events `result`'s route asks for, as (id, queue, message): each carries the
        session, its parent's metadata and its place in the chain. Past ``max_hops`` they
        are dead-lettered instead (a cycle cannot run forever)."""
        from agentflow.chaining import next_events

        parent = begun.event
        try:
            events, hop = next_events(parent, result)
        except ValidationError as exc:
            await self.dead_letter(f"route of event {parent.id}: invalid next event: {exc}",
                                   result.model_dump(mode="json"), begun.job.task_id,
                                   begun.job.queue, "chain")  # fmt: skip
            return []
        if not events:
            return []
        limit = self.settings.runner.max_hops
        if hop > limit:
            for event in events:
                await self.dead_letter(
                    f"chain of event {parent.id} reached max_hops={limit}: "
                    f"agent {event.agent!r} not run", event.model_dump(mode="json"), event.id,
                    agent_queue(event.agent or ""), "chain")  # fmt: skip
            return []
        builder = self._builder()
        chained = []
        for event in events:
            queue = agent_queue(event.agent or "")
            try:
                chained.append((event.id, queue, builder._message(event, queue)))
            except InvalidEvent as exc:
                await self.dead_letter(f"route of event {parent.id}: {exc}",
                                       event.model_dump(mode="json"), event.id, queue,
                                       "chain")  # fmt: skip
        result.next_events = [event_id for event_id, _queue, _message in chained]
        return chained

    def _builder(self) -> Any:
        """The message builder that producers use (chained and error-handler events)."""
        if self._event_builder is None:
            from agentflow.celery_app import app
            from agentflow.client._build import EventBuilder

            self._event_builder = EventBuilder(app, self.settings)
        return self._event_builder

    def _finish_request(self, begun: Begun, result: AgentResult,
                        chained: list[tuple[str, str, str]] | None = None,
                        ) -> tuple[list[Any], list[Any], str]:  # fmt: skip
        finished = time.time()
        event, job = begun.event, begun.job
        enqueued = job.headers.get(ENQUEUED_AT_HEADER)
        if isinstance(enqueued, int | float):
            result.timings["queue_wait"] = max(0.0, begun.started - float(enqueued))
        loaded = begun.loaded or begun.started
        result.timings["state_load"] = loaded - begun.started
        result.timings["agent"] = finished - loaded
        result.worker = self.hostname
        encoded = result.model_dump_json()
        state_key = ""
        state_args: list[Any] = [0, 0, 0]
        if event.session_id and not result.state_updates.is_empty():
            state_key = self.states.key(event.session_id)
            state_args = self.states.delta_args(result.state_updates)
        meta_key, head, tail = job.meta.parts() if job.meta is not None else ("", "", "")
        unacked, unacked_index, tag = job.settle if job.settle is not None else ("", "", "")
        keys = [begun.done_key, begun.claim_key, self.keys.inflight, state_key, meta_key,
                unacked, unacked_index, self.keys.cancel(event.id), QUEUES_KEY]  # fmt: skip
        args = [encoded, self.result_ttl, event.id, self.states.ttl, head, tail,
                job.meta.ttl if job.meta is not None else 0, tag, begun.run_id,
                len(chained or ()), 0, WAKE_LIMIT]  # fmt: skip
        if chained:
            runner = self.settings.runner
            args[10] = finished + runner.hard_time_limit + 2 * runner.visibility_timeout
            for event_id, queue, message in chained:
                keys += [queue, wake_key(queue)]
                args += [event_id, message]
        args += state_args
        return keys, args, encoded

    async def _finish(self, begun: Begun, result: AgentResult) -> Done | Revoked:
        chained = await self._chained(begun, result) if result.route else None
        keys, args, encoded = self._finish_request(begun, result, chained)
        reply = await self.batch().call(_FINISH, keys, args)
        status = int(reply[0])
        if status == 2:
            return Revoked()
        settled = begun.job.settle is not None
        if status == 1:
            return Done(encoded=reply[1], replayed=True, settled=settled)
        return Done(encoded=encoded, settled=settled)

    async def _fan_out(self, begun: Begun, request: CallTools, step: int) -> FannedOut:
        """Send the chord that runs `request`'s calls and then resumes the agent."""
        from agentflow.tools import fanout

        limit = begun.agent.max_steps or self.settings.tools.max_steps
        if step > limit:
            await self._release(begun)
            raise await self.dead_letter(
                f"agent {begun.agent.name!r} asked for tools more than max_steps={limit} times",
                begun.raw, begun.job.task_id, begun.job.queue, "agent",
            )  # fmt: skip
        job = begun.job
        if not job.send_fan_out:
            from agentflow.celery_app import app

            signature = await fanout.build(app, request, begun.raw, begun.agent.name,
                                           job.task_id, step, self.settings)  # fmt: skip
            await self._release(begun, done=False)
            return FannedOut(len(request.calls), signature=signature)
        # The continuation claims the next step: the claim goes with the chord, atomically.
        release = functools.partial(_release_in, keys=[begun.claim_key, self.keys.inflight],
                                    args=[begun.event.id, begun.run_id, "0"])  # fmt: skip
        settled = await fanout.send(request, begun.raw, begun.agent.name, job.task_id, step,
                                    self.settings, headers=job.headers, settle=job.settle,
                                    also=release, connection=self.batch().shared)  # fmt: skip
        return FannedOut(len(request.calls), settled=settled)

    # -- the three kinds of work ---------------------------------------------------------
    async def run(self, job: Job) -> Outcome:
        """Run `job` by its task name (an event, a continuation or a tool call)."""
        if job.name == "agentflow.run_tool":
            return await self.run_tool(job)
        if job.name == "agentflow.resume_event":
            return await self.resume(job)
        if job.name == SIGNAL_TASK:
            return await self.resume_signal(job)
        return await self.run_event(job)

    async def run_event(self, job: Job) -> Outcome:
        """An event (`agentflow.run_event`)."""
        args = job.args
        raw = args[0] if len(args) == 1 and not job.kwargs else {
            "event": args[0] if args else None, "args": args[1:], "kwargs": job.kwargs}  # fmt: skip
        name = _metric_name(raw, job.queue)
        metrics = get_metrics()
        started = time.time()
        metrics.incr(f"events.received.{name}")
        enqueued = job.headers.get(ENQUEUED_AT_HEADER)
        if isinstance(enqueued, int | float):
            metrics.timing(f"event.queue_wait.{name}", max(0.0, started - enqueued) * 1000)
        try:
            begun = await self._begin(raw, job, step=0)
            if not isinstance(begun, Begun):
                await self._free_slots(raw, begun, job.queue)
                return _count(begun, name, started, enqueued)
            agent = begun.agent
            outcome = await self._run_step(begun, agent.run, agent.is_async, step=1,
                                           first=True)  # fmt: skip
        except RetryLater:
            metrics.incr(f"events.retried.{name}")
            raise
        except (EventRejected, AgentError):
            metrics.incr(f"events.failed.{name}")
            await self._free_slots(raw, None, job.queue)
            raise
        except BaseException:
            metrics.incr(f"events.failed.{name}")
            raise
        await self._free_slots(raw, outcome, job.queue)
        return _count(outcome, name, started, enqueued)

    async def resume(self, job: Job) -> Outcome:
        """A fan-out's continuation (`agentflow.resume_event`, the chord's body)."""
        from agentflow.tools import fanout

        results, raw, context = [*job.args, None, None, None][:3]
        context = context if isinstance(context, dict) else {}
        step = fanout.step_of(context)
        name = _metric_name(raw, job.queue)
        started = time.time()
        enqueued = job.headers.get(ENQUEUED_AT_HEADER)
        try:
            begun = await self._begin(raw, job, step=step)
            if not isinstance(begun, Begun):
                await self._free_slots(raw, begun, job.queue)
                return _count(begun, name, started, enqueued)
            ordered = fanout.results_in_order(results, context)
            resume = begun.agent.resume
            outcome = await self._run_step(begun, resume, inspect.iscoroutinefunction(resume),
                                           fanout.user_context(context), ordered,
                                           step=step + 1)  # fmt: skip
        except RetryLater:
            get_metrics().incr(f"events.retried.{name}")
            raise
        except (EventRejected, AgentError):
            get_metrics().incr(f"events.failed.{name}")
            await self._free_slots(raw, None, job.queue)
            raise
        except BaseException:
            get_metrics().incr(f"events.failed.{name}")
            raise
        await self._free_slots(raw, outcome, job.queue)
        return _count(outcome, name, started, enqueued)

    async def resume_signal(self, job: Job) -> Outcome:
        """A suspended event resumed by its signal or timeout (`agentflow.signal_event`):
        the agent's ``on_signal`` runs, and its result is the event's."""
        event_id, token, raw_signal = [*job.args, None, None, None][:3]
        record: dict[bytes, bytes] = await cast(
            Any, get_async_redis().hgetall(self.keys.wait(str(event_id)))
        )
        status = record.get(b"status")
        if not isinstance(token, str) or record.get(b"token") != token.encode() or \
                status not in (b"resumed", b"done"):  # fmt: skip
            # A wait that ended otherwise (cancelled, expired) or a later wait of the event.
            log.info("event %s: resume message for a wait that is over; dropped", event_id)
            return Suspended(stale=True)
        raw = json.loads(record[b"event"])
        name = _metric_name(raw, job.queue)
        started = time.time()
        enqueued = job.headers.get(ENQUEUED_AT_HEADER)
        waits = int(record.get(b"waits") or 1)
        try:
            begun = await self._begin(raw, job, step=-waits)
            if not isinstance(begun, Begun):
                return _count(begun, name, started, enqueued)
            begun.waits = waits
            fields = raw_signal if isinstance(raw_signal, dict) else {}
            signal = Signal(name=str(fields.get("name") or record.get(b"signal", b"").decode()),
                            payload=fields.get("payload"),
                            timed_out=bool(fields.get("timed_out")),
                            context=json.loads(record.get(b"context") or b"{}"))  # fmt: skip
            agent = begun.agent
            outcome = await self._run_step(begun, agent.on_signal, agent.signal_is_async, signal,
                                           step=1)  # fmt: skip
        except RetryLater:
            get_metrics().incr(f"events.retried.{name}")
            raise
        except BaseException:
            get_metrics().incr(f"events.failed.{name}")
            raise
        if isinstance(outcome, Done | Revoked):
            await self._wait_over(str(event_id), token)
        return _count(outcome, name, started, enqueued)

    async def _wait_over(self, event_id: str, token: str) -> None:
        """Mark a resumed wait done (kept for a redelivered resume message, then expires)."""
        key = self.keys.wait(event_id)
        try:
            client: Any = get_async_redis()
            if await client.hget(key, "token") == token.encode():
                await client.hset(key, "status", "done")
                await client.expire(key, self.result_ttl)
        except Exception:
            log.debug("could not mark the wait of %s done", event_id, exc_info=True)

    async def _suspend(self, begun: Begun, wait: WaitFor) -> Done | Revoked | Suspended:
        """Store the suspended event (what it waits for, its timeout) and free this run."""
        from agentflow._redis import schedule, waits
        from agentflow._redis.publish import task_message
        from agentflow.celery_app import app

        event, agent, job = begun.event, begun.agent, begun.job
        if not agent.waits:
            await self._release(begun)
            raise await self.dead_letter(
                f"agent {agent.name!r} returned WaitFor but has no on_signal() to resume it",
                begun.raw, job.task_id, job.queue, "agent")  # fmt: skip
        queue = job.queue or agent_queue(agent.name)
        token = _run_id()
        key = self.keys.wait(event.id)
        due = time.time() + wait.timeout if wait.timeout is not None else None
        member = schedule.timeout_member(event.id)
        entry = ""
        if due is not None:
            args = (event.id, token, waits.signal_args(wait.signal, None, timed_out=True))
            message = task_message(app, SIGNAL_TASK, args, {}, task_id=event.id, queue=queue,
                                   root_id=job.headers.get("root_id") or event.id)  # fmt: skip
            entry = schedule.entry(queue, message.item, guard=key, token=token)
        meta_key = self._meta_key(job)
        record_ttl = int(wait.timeout + self.result_ttl) if wait.timeout is not None else 0
        unacked, unacked_index, tag = job.settle if job.settle is not None else ("", "", "")
        raw = begun.raw if isinstance(begun.raw, dict) else event.model_dump(mode="json")
        status, *rest = await waits.SUSPEND.run_async(
            get_async_redis(),
            [begun.done_key, begun.claim_key, self.keys.inflight, key, self.keys.scheduled,
             self.keys.scheduled_items, meta_key, unacked, unacked_index,
             self.keys.cancel(event.id)],
            [event.id, begun.run_id, token, wait.signal, queue, json.dumps(raw),
             json.dumps(wait.context), begun.waits + 1, agent.name, record_ttl,
             repr(due) if due is not None else "", member, entry,
             waits.waiting_meta(event.id, wait.signal, due), self.result_ttl, tag],
        )  # fmt: skip
        if int(status) == 1:
            return Done(encoded=rest[0], replayed=True)
        if int(status) == 2:
            return Revoked()
        log.info("event %s waits for signal %r (timeout %s)", event.id, wait.signal,
                 f"{wait.timeout:g}s" if wait.timeout is not None else "none")  # fmt: skip
        return Suspended(settled=job.settle is not None)

    @staticmethod
    def _meta_key(job: Job) -> str:
        """Celery's result key of the job's task, where the broker's Redis holds it ('')."""
        if job.meta is not None:
            return job.meta.key
        from celery.backends.redis import RedisBackend

        from agentflow._redis.connection import get_redis
        from agentflow._redis.publish import same_redis
        from agentflow.celery_app import app

        backend = app.backend
        if isinstance(backend, RedisBackend) and same_redis(backend.client, get_redis()):
            return bytes(backend.get_key_for_task(job.task_id)).decode()
        return ""

    async def _free_slots(self, raw: Any, outcome: Outcome | None,
                          queue: str | None = None) -> None:  # fmt: skip
        """An event ended (stored, replayed, cancelled or failed): free its slot of its
        agent's cap, and of its tenant's cap, queueing the tenant's next parked events. A
        fan-out has not ended. Nothing to do (and no lookup) when nothing is capped."""
        if not (self._capped_agents or self._capped_tenants) or not isinstance(raw, dict) \
                or isinstance(outcome, FannedOut):  # fmt: skip
            return
        agent = raw.get("agent") or (queue[len(AGENT_QUEUE_PREFIX):] if queue and
                                     queue.startswith(AGENT_QUEUE_PREFIX) else None)  # fmt: skip
        if agent in self._capped_agents:
            try:
                await self.batch().command("ZREM", self.keys.agent_slots(agent),
                                           str(raw.get("id", "")))  # fmt: skip
            except Exception:  # its slot expires with its lease
                log.warning("could not free agent %r's slot", agent, exc_info=True)
        tenant = raw.get("tenant")
        if not (self._capped_tenants and isinstance(tenant, str)):
            return
        cap = self.settings.tenants.limit(tenant)
        if cap is None:
            return
        runner, keys, now = self.settings.runner, self.keys, time.time()
        expire_at = now + runner.hard_time_limit + 2 * runner.visibility_timeout
        try:
            await self.batch().call(
                _TENANT_RELEASE, [keys.tenant_slots(tenant), keys.tenant_parked(tenant),
                                  QUEUES_KEY],
                [str(raw.get("id", "")), now, cap, expire_at, WAKE_PREFIX, WAKE_LIMIT],
            )  # fmt: skip
        except Exception:  # its slot expires with its lease; the parked wait until then
            log.warning("could not release tenant %r's slot", tenant, exc_info=True)

    async def _run_step(self, begun: Begun, fn: Callable[..., Any], is_async: bool,
                        *extra: Any, step: int, first: bool = False) -> Outcome:  # fmt: skip
        """Run the agent (`fn` is its run or resume), then finish or fan out; the
        lifecycle hooks (:mod:`agentflow.hooks`) run around it, and with tracing on its
        steps are recorded (:mod:`agentflow.timeline`)."""
        renewer = self.renewer()
        renewer.hold(begun)
        event = begun.event
        state = _EMPTY_STATE
        steps = begun.steps = self._steps(begun, step, first)
        outcome: Any = "failed"
        try:
            state = await self.load_state(begun)
            try:
                if first:
                    await self._hook(begun, "before_event", event, state)
                await self._hook(begun, "before_agent_run", event, state)
            except EventRefused as refused:
                await self._release(begun)
                rejected = await self.dead_letter(f"refused by a hook: {refused.reason}",
                                                  begun.raw, begun.job.task_id,
                                                  begun.job.queue, "hook")  # fmt: skip
                outcome = rejected
                await self._ended(begun, state, None, rejected)
                raise rejected from None
            ran = time.monotonic()
            try:
                result = await self._call_agent(begun, fn, is_async, event, state, *extra)
            except asyncio.CancelledError:
                outcome = "cancelled"
                await asyncio.shield(self._release(begun))
                raise
            except Exception as exc:
                if steps is not None:
                    steps.add("agent", ms=_ms(ran), error=f"{type(exc).__name__}: {exc}")
                await self._hook(begun, "agent_error", event, state, exc)
                failed = outcome = await self.failure(begun, exc)
                if not isinstance(failed, RetryLater):
                    await self._ended(begun, state, None, failed)
                raise failed from exc
            if steps is not None:
                usage = getattr(result, "usage", None)
                steps.add("agent", ms=_ms(ran), returned=type(result).__name__,
                          usage=usage.__dict__ if usage and usage.llm_calls else None)  # fmt: skip
            await self._hook(begun, "after_agent_run", event, state, result)
            if isinstance(result, CallTools):
                fanned = outcome = await self._fan_out(begun, result, step)
                if steps is not None:
                    steps.add("fan_out", tools=[c.name for c in result.calls])
                return fanned
            if isinstance(result, WaitFor):
                suspended = outcome = await self._suspend(begun, result)
                if steps is not None:
                    steps.add("wait", signal=result.signal, timeout=result.timeout)
                return suspended
            done = outcome = await self._finish(begun, result)
            if isinstance(done, Done) and not done.replayed:
                if steps is not None and result.next_events:
                    steps.add("chained", events=result.next_events, route=result.routes)
                await self._ended(begun, state, result, None)
            return done
        finally:
            renewer.release(begun)
            if steps is not None:
                await self._write_steps(begun, steps, outcome)

    def _hook(self, begun: Begun, name: hooks.HookName, *args: Any) -> Awaitable[None]:
        """Run the `name` hooks (timed in the trace); with none registered, no coroutine is
        made: the event path pays one dict lookup per hook point."""
        if not hooks.any_registered(name):
            return _DONE
        return self._run_hooks(begun, name, args)

    async def _run_hooks(self, begun: Begun, name: hooks.HookName, args: tuple[Any, ...]) -> None:
        started = time.monotonic()
        try:
            await hooks.run_hooks(name, *args)
        finally:
            if begun.steps is not None:
                begun.steps.add("hooks", hook=name, ms=_ms(started))

    def _ended(self, begun: Begun, state: State, result: AgentResult | None,
               error: Exception | None) -> Awaitable[None]:  # fmt: skip
        """Run the ``after_event`` hooks of an event that ended (stored or failed)."""
        return self._hook(begun, "after_event", begun.event, state, result, error)

    def _steps(self, begun: Begun, step: int, first: bool) -> Steps | None:
        """A new trace of this run when tracing is on, with its start step."""
        if not self.settings.monitoring.trace:
            return None
        event, job = begun.event, begun.job
        steps = Steps(event.id, event.session_id, first)
        enqueued = job.headers.get(ENQUEUED_AT_HEADER)
        wait = begun.started - float(enqueued) if isinstance(enqueued, int | float) else None
        steps.add("start", agent=begun.agent.name, worker=self.hostname, step=step - 1,
                  attempt=begun.starts, task_id=job.task_id,
                  queue_wait_ms=round(wait * 1000, 3) if wait is not None else None)  # fmt: skip
        return steps

    async def _write_steps(self, begun: Begun, steps: Steps, outcome: Any) -> None:
        """Record the run's end and store its steps (never fails the run)."""
        end: dict[str, Any]
        if isinstance(outcome, Done):
            end = {"outcome": "replayed" if outcome.replayed else "succeeded"}
        elif isinstance(outcome, FannedOut):
            end = {"outcome": "fanned_out", "calls": outcome.calls}
        elif isinstance(outcome, Revoked):
            end = {"outcome": "cancelled"}
        elif isinstance(outcome, Suspended):
            end = {"outcome": "waiting"}
        elif isinstance(outcome, RetryLater):
            end = {"outcome": "retry", "reason": outcome.reason, "countdown": outcome.countdown}
        elif isinstance(outcome, Exception):
            end = {"outcome": "failed", "reason": str(outcome)}
        else:
            end = {"outcome": str(outcome)}
        steps.add("end", ms=_ms_since(begun.started), **end)
        await self._store_steps(steps)

    async def _store_steps(self, steps: Steps) -> None:
        """Write a run's (or a tool call's) trace steps; never fails the work."""
        try:
            await self.batch().call(_TRACE, *steps.call(self.keys.prefix, self._trace_ttl))
        except Exception:
            log.warning("could not store the trace of event %s", steps.event_id, exc_info=True)

    async def run_tool(self, job: Job) -> Done:
        """A tool call (`agentflow.run_tool`), maybe a chord member. Its first result is
        kept, so a redelivered call gives the chord the same result (Celery's chord join
        counts a member once per distinct result)."""
        from agentflow.tools.execute import execute_tool_async

        call = job.args[0] if job.args else job.kwargs.get("call")
        event_id = job.args[1] if len(job.args) > 1 else job.kwargs.get("event_id")
        batch = self.batch()
        key = self.keys.tool_result(job.task_id)
        stored, cancelled = await asyncio.gather(
            batch.command("GET", key),
            batch.command("EXISTS", self.keys.cancel(str(event_id or ""))))  # fmt: skip
        if stored is not None:
            return Done(encoded=stored, replayed=True)
        started = time.monotonic()
        if event_id and cancelled:
            result = ToolResult(id=_call_id(call), name=_call_name(call), error="cancelled")
        else:
            try:
                result = await execute_tool_async(call, event_id)
            except asyncio.CancelledError:
                if not job.cancelled:
                    raise
                result = ToolResult(id=_call_id(call), name=_call_name(call), error="cancelled")
        if event_id and self.settings.monitoring.trace:
            await self._trace_tool(str(event_id), job.task_id, result, _ms(started))
        encoded = result.model_dump_json()
        if not await batch.command("SET", key, encoded, "NX", "EX", self.result_ttl):
            first = await batch.command("GET", key)  # another run of this call stored first
            if first is not None:  # its result stands
                return Done(encoded=first, replayed=True)
        return Done(encoded=encoded)

    async def _trace_tool(self, event_id: str, task_id: str, result: ToolResult,
                          ms: float) -> None:  # fmt: skip
        """Add a tool call's run to its event's trace (never fails the call)."""
        steps = Steps(event_id, None, False)
        steps.add("tool", name=result.name, call_id=result.id, task_id=task_id, ms=ms,
                  error=result.error, cached=result.cached, worker=self.hostname)  # fmt: skip
        await self._store_steps(steps)


_run_ids = itertools.count()
_run_prefix = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}:"


def _run_id() -> str:
    """A run's unique id (host, pid, a random per-process part, a counter): uuid4 cost 3 %
    of a worker's time under W0."""
    return f"{_run_prefix}{next(_run_ids)}"


def _release_in(pipe: Any, keys: list[Any], args: list[Any]) -> None:
    """Queue the release script on a transaction (EVAL: a script Redis forgot cannot fail
    there half-way)."""
    pipe.eval(_RELEASE.text, len(keys), *keys, *args)


def _call_id(call: Any) -> str:
    return str(call.get("id", "?")) if isinstance(call, dict) else "?"


def _call_name(call: Any) -> str:
    return str(call.get("name", "?")) if isinstance(call, dict) else "?"


def _metric_name(raw: Any, queue: str | None) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("agent"), str) and raw["agent"]:
        return str(raw["agent"]).replace(".", "_")
    return (queue or "unknown").rsplit(".", 1)[-1]


def _count(outcome: Outcome, name: str, started: float, enqueued: Any) -> Outcome:
    """Metrics for a finished step, the same on every path."""
    metrics = get_metrics()
    now = time.time()
    if isinstance(outcome, FannedOut):
        metrics.incr(f"events.fanned_out.{name}")
        return outcome
    if isinstance(outcome, Revoked):
        metrics.incr(f"events.cancelled.{name}")
        return outcome
    if isinstance(outcome, Suspended):
        metrics.incr(f"events.suspended.{name}")
        return outcome
    metrics.timing(f"event.run_time.{name}", (now - started) * 1000)
    metrics.incr(f"events.succeeded.{name}")
    if isinstance(enqueued, int | float):
        metrics.timing(f"event.latency.{name}", max(0.0, now - enqueued) * 1000)
    return outcome


class _Done:
    """Awaits to None at once, made once: cheaper than a coroutine per empty hook point."""

    def __await__(self) -> Any:
        return iter(())


_DONE: Awaitable[None] = _Done()


def _ms(since: float) -> float:
    """Milliseconds since the ``time.monotonic()`` value `since`."""
    return round((time.monotonic() - since) * 1000, 3)


def _ms_since(since: float) -> float:
    """Milliseconds since the ``time.time()`` value `since`."""
    return round((time.time() - since) * 1000, 3)


async def _awaited(value: Any) -> Any:
    return await value


def _too_many_stuck(stuck: int) -> None:
    from agentflow._worker.recycle import recycle

    recycle(f"{stuck} timed-out agent threads are still stuck in blocking calls")


_runner: EventRunner | None = None


def get_runner() -> EventRunner:
    """The process's EventRunner, built on first use (a forked child builds its own)."""
    global _runner
    runner = _runner
    if runner is None:
        runner = _runner = EventRunner()
    return runner


def reset_runner() -> None:
    """Forget the process's runner (tests, after configuration changes; a forked child)."""
    global _runner
    _runner = None


os.register_at_fork(after_in_child=reset_runner)
