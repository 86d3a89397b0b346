"""What `agentflow.run_event` does with one event, kept apart from the Celery task wrapper.

1. Validate the event; anything that cannot run goes to the dead-letter queue with its reason.
2. One Lua round trip: return the stored result if the event already finished (a redelivery),
   else claim it, counting how often this task id has started (poison messages are capped).
3. Load the session state, run the agent (async agents on the process's event loop, cancelled
   at `event_timeout`), then one Lua round trip stores the result and the state delta — only
   for the first run to finish, so a redelivered event yields a single result.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from agentflow import _aio
from agentflow.agents.base import Agent, to_result
from agentflow.agents.registry import get_agent
from agentflow.broker.connection import get_redis
from agentflow.broker.routes import resolve_agent
from agentflow.config import Settings, get_settings
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import AgentError, EventRejected, LLMUnavailable, UnknownAgent
from agentflow.models import AgentResult, Event
from agentflow.state import State, StateStore
from agentflow.tasks import _scripts
from agentflow.tasks.script_batch import ScriptBatch
from agentflow.tools.calls import CallTools, ToolResult

log = logging.getLogger("agentflow.run_event")

ENQUEUED_AT_HEADER = "agentflow_enqueued_at"
_EMPTY_STATE = State({})


class RetryLater(Exception):
    """The event should run again after `countdown` seconds (LLM unavailable, claim held)."""

    def __init__(self, reason: str, countdown: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown


class EventRunner:
    """Per-process state of the event pipeline: settings, Redis, scripts, stores."""

    def __init__(self, settings: Settings | None = None, client: redis.Redis | None = None):
        self.settings = s = settings or get_settings()
        self.redis = client or get_redis()
        prefix = s.broker.key_prefix
        self.prefix = prefix
        self.inflight_key = f"{prefix}:inflight"
        self.dlq = DeadLetterQueue(self.redis, prefix)
        self.states = StateStore(
            self.redis,
            prefix=prefix,
            ttl=s.memory.state_cache_ttl,
            cache_size=s.memory.state_cache_size,
            compress=s.memory.enable_state_compression,
            compression_threshold=s.memory.compression_threshold,
        )
        self._begin = self.redis.register_script(_scripts.BEGIN)
        self._finish = self.redis.register_script(_scripts.FINISH)
        self._release = self.redis.register_script(_scripts.RELEASE)
        self.claim_ttl = int(s.runner.hard_time_limit) + 5
        self.deliveries_ttl = int(s.runner.effective_visibility_timeout * 2 + 3600)
        self.result_ttl = int(s.broker.result_expires)
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self._executor: ThreadPoolExecutor | None = None

    # -- steps ---------------------------------------------------------------------------
    def dead_letter(
        self, reason: str, raw: Any, task_id: str | None, queue: str | None, source: str
    ) -> EventRejected:
        """Store the event in the DLQ and return the exception the task raises."""
        event = raw if isinstance(raw, dict) else None
        self.dlq.push(
            reason,
            event=event,
            raw=None if event is not None else raw,
            task_id=task_id,
            queue=queue,
            source=source,
        )
        log.warning("event %s dead-lettered: %s", task_id, reason)
        return EventRejected(reason)

    def parse(self, raw: Any) -> tuple[Event, Agent]:
        """Validate the wire event and find its agent; raises ValueError/UnknownAgent."""
        if not isinstance(raw, dict):
            raise ValueError(f"an event must be a JSON object, got {type(raw).__name__}")
        event = Event.model_validate(raw)
        name = resolve_agent(raw, self.settings)
        if event.agent is None:
            event.agent = name
        return event, get_agent(name)

    def run_agent(self, agent: Agent, event: Event, state: State) -> AgentResult | CallTools:
        """Call the agent, sync or async, with its time limit; normalise its return value."""
        return self._call(agent, event, agent.is_async, agent.run, event, state)

    def resume_agent(
        self, agent: Agent, event: Event, state: State, context: dict[str, Any],
        results: list[ToolResult],
    ) -> AgentResult | CallTools:  # fmt: skip
        """Call the agent's `resume` with its tool results (sync or async, time-limited)."""
        return self._call(agent, event, inspect.iscoroutinefunction(agent.resume), agent.resume,
                          event, state, context, results)  # fmt: skip

    def _call(
        self, agent: Agent, event: Event, is_async: bool, fn: Callable[..., Any], *args: Any
    ) -> AgentResult | CallTools:
        """`fn(*args)` from a pool thread: async on the process loop, sync under a time limit."""
        timeout = agent.timeout or self.settings.runner.event_timeout
        if is_async:
            value = _aio.run(_await(fn(*args)), timeout=timeout)
        elif self.settings.runner.pool == "prefork":
            value = fn(*args)  # the pool's soft time limit interrupts it
        else:
            # threads/solo enforce no time limit: run it on a helper thread and stop waiting
            # at the timeout (the event is dead-lettered; the thread finishes unseen).
            future = self._sync_executor().submit(fn, *args)
            try:
                value = future.result(timeout)
            except FutureTimeout:
                future.cancel()
                raise TimeoutError(timeout) from None
        if inspect.isawaitable(value):
            value = _aio.run(_await(value), timeout=timeout)
        return value if isinstance(value, CallTools) else to_result(value, event, agent.name)

    async def _call_async(
        self, agent: Agent, event: Event, is_async: bool, fn: Callable[..., Any], *args: Any
    ) -> AgentResult | CallTools:
        """`fn(*args)` on the process loop: async and non-blocking sync code run on the loop,
        blocking sync code on a helper thread; the time limit cancels or stops waiting."""
        timeout = agent.timeout or self.settings.runner.event_timeout
        if is_async or not agent.blocking:
            value: Any = fn(*args)
        else:
            pending = asyncio.get_running_loop().run_in_executor(self._sync_executor(), fn, *args)
            value = await asyncio.wait_for(pending, timeout)
        if inspect.isawaitable(value):
            value = await asyncio.wait_for(_await(value), timeout)
        return value if isinstance(value, CallTools) else to_result(value, event, agent.name)

    def fan_out(self, begun: Begun, request: CallTools, step: int) -> FanOut:
        """The chord that runs `request`'s calls and then resumes the agent (step `step`)."""
        from agentflow.app import app
        from agentflow.tools import fanout

        limit = begun.agent.max_steps or self.settings.tools.max_steps
        if step > limit:
            self._release(keys=[begun.claim_key, self.inflight_key], args=[begun.event.id])
            raise self.dead_letter(
                f"agent {begun.agent.name!r} asked for tools more than max_steps={limit} times",
                begun.raw, begun.task_id, begun.queue, "agent",
            )  # fmt: skip
        signature = fanout.build(app, request, begun.raw, begun.agent.name, begun.task_id,
                                 step, self.settings, self.redis)  # fmt: skip
        return FanOut(signature, len(request.calls), step)

    def _sync_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with _runner_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=self.settings.runner.worker_pool_size + 8,
                        thread_name_prefix="agentflow-agent",
                    )
        return self._executor

    async def run_agent_async(
        self, agent: Agent, event: Event, state: State
    ) -> AgentResult | CallTools:
        """:meth:`run_agent` for a caller already on the process loop (direct execution)."""
        return await self._call_async(agent, event, agent.is_async, agent.run, event, state)

    def begin(
        self, raw: Any, task_id: str, queue: str | None, headers: dict[str, Any]
    ) -> Begun | dict[str, Any]:
        """Validate and claim an event: a :class:`Begun` to run, or its stored result.

        Raises EventRejected (dead-lettered) or RetryLater (another run holds the claim).
        """
        begun, keys, args = self._claim_request(raw, task_id, queue, headers)
        return self._claimed(begun, self._begin(keys=keys, args=args))

    async def begin_async(
        self, raw: Any, task_id: str, queue: str | None, headers: dict[str, Any],
        scripts: ScriptBatch,
    ) -> Begun | dict[str, Any]:  # fmt: skip
        """:meth:`begin` on the event loop, its claim batched with the loop turn's others."""
        begun, keys, args = self._claim_request(raw, task_id, queue, headers)
        return self._claimed(begun, await scripts.call(self._begin, keys, args))

    def _claim_request(
        self, raw: Any, task_id: str, queue: str | None, headers: dict[str, Any]
    ) -> tuple[Begun, list[Any], list[Any]]:
        started = time.time()
        try:
            event, agent = self.parse(raw)
        except ValidationError as exc:
            reason = "invalid event: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()
            )
            raise self.dead_letter(reason, raw, task_id, queue, "worker") from None
        except (ValueError, UnknownAgent) as exc:
            raise self.dead_letter(str(exc), raw, task_id, queue, "worker") from None

        begun = Begun(event, agent, raw, task_id, queue, headers, started,
                      self._done_key(event), self._claim_key(event))  # fmt: skip
        keys = [begun.done_key, begun.claim_key, f"{self.prefix}:deliv:{task_id}"]
        return begun, keys, [task_id, self.claim_ttl, self.deliveries_ttl]

    def _claimed(self, begun: Begun, reply: Any) -> Begun | dict[str, Any]:
        status, value = reply
        event, raw, task_id, queue = begun.event, begun.raw, begun.task_id, begun.queue
        if status == 1:  # already finished: a redelivery, or a duplicate idempotency key
            return dict(json.loads(value))
        begun.starts = int(value)
        if begun.starts > self.settings.runner.max_redeliveries:
            self._release(keys=[begun.claim_key, self.inflight_key], args=[event.id])
            last: bytes | None = self.redis.get(begun.retry_key)  # type: ignore[assignment]
            last_error = f"; last error: {last.decode(errors='replace')}" if last else ""
            raise self.dead_letter(
                f"started {begun.starts - 1} times without finishing (worker lost or retried "
                f"each time); max_redeliveries={self.settings.runner.max_redeliveries}"
                f"{last_error}", raw, task_id, queue, "worker",
            )  # fmt: skip
        if status == 2:
            raise RetryLater(f"event {event.dedup_key} is running elsewhere", countdown=1.0)
        return begun

    def load_state(self, begun: Begun) -> State:
        """The event's session state (empty without a session)."""
        session = begun.event.session_id
        state = self.states.load(session) if session else _EMPTY_STATE
        begun.loaded = time.time()
        return state

    def failure(self, begun: Begun, exc: BaseException) -> Exception:
        """What the task raises for an agent that failed: RetryLater, or a dead letter."""
        event, agent = begun.event, begun.agent
        if isinstance(exc, LLMUnavailable):
            self.redis.delete(begun.claim_key)
            # Kept so that the dead letter says why, if the retries run out.
            self.redis.set(begun.retry_key, f"LLM unavailable: {exc}"[:1000],
                           ex=self.deliveries_ttl)  # fmt: skip
            countdown = exc.retry_after or min(60.0, 2.0 ** min(begun.starts, 6))
            # An ETA past the visibility timeout would be redelivered early (a duplicate run).
            countdown = min(countdown, self.settings.runner.effective_visibility_timeout / 2)
            return RetryLater(f"LLM unavailable: {exc}", countdown)
        self._release(keys=[begun.claim_key, self.inflight_key], args=[event.id])
        if isinstance(exc, TimeoutError | asyncio.TimeoutError | SoftTimeLimitExceeded):
            timeout = agent.timeout or self.settings.runner.event_timeout
            reason = f"agent {agent.name!r} timed out after {timeout:g}s"
            return self.dead_letter(reason, begun.raw, begun.task_id, begun.queue, "agent")
        reason = f"agent {agent.name!r} raised {type(exc).__name__}: {exc}"
        self.dead_letter(reason, begun.raw, begun.task_id, begun.queue, "agent")
        return AgentError(reason)

    def finish(
        self,
        begun: Begun,
        result: AgentResult,
        meta: ResultMeta | None = None,
        settle: tuple[str, str, str] | None = None,
    ) -> dict[str, Any]:
        """Store the result and the state delta (first run to finish wins); the result.

        With `meta`, the same script also writes Celery's result-backend entry for the task
        and publishes it (direct execution: no separate backend round trip). With `settle`
        (kombu's unacked hash, its index, the delivery tag) it also removes the message from
        kombu's unacked bookkeeping, so the ack that follows needs no round trip.
        """
        keys, args, payload = self._finish_request(begun, result, meta, settle)
        return self._finished(self._finish(keys=keys, args=args), payload)

    async def finish_async(
        self, begun: Begun, result: AgentResult, scripts: ScriptBatch,
        meta: ResultMeta | None = None, settle: tuple[str, str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """:meth:`finish` on the event loop, batched with the loop turn's other scripts."""
        keys, args, payload = self._finish_request(begun, result, meta, settle)
        return self._finished(await scripts.call(self._finish, keys, args), payload)

    def _finish_request(
        self, begun: Begun, result: AgentResult, meta: ResultMeta | None,
        settle: tuple[str, str, str] | None,
    ) -> tuple[list[Any], list[Any], dict[str, Any]]:  # fmt: skip
        finished = time.time()
        event = begun.event
        enqueued = begun.headers.get(ENQUEUED_AT_HEADER)
        if isinstance(enqueued, int | float):
            result.timings["queue_wait"] = max(0.0, begun.started - float(enqueued))
        loaded = begun.loaded or begun.started
        result.timings["state_load"] = loaded - begun.started
        result.timings["agent"] = finished - loaded
        result.worker = self.hostname
        payload = result.model_dump(mode="json")
        encoded = json.dumps(payload, separators=(",", ":"))
        state_key = ""
        state_args: list[Any] = [0, 0, 0]
        if event.session_id and not result.state_updates.is_empty():
            state_key = self.states.key(event.session_id)
            state_args = self.states.delta_args(result.state_updates)
        meta_key, head, tail = meta.parts() if meta is not None else ("", "", "")
        unacked, unacked_index, tag = settle if settle is not None else ("", "", "")
        keys = [begun.done_key, begun.claim_key, self.inflight_key, state_key, meta_key,
                unacked, unacked_index]  # fmt: skip
        args = [encoded, self.result_ttl, event.id, self.states.ttl, head, tail,
                meta.ttl if meta is not None else 0, tag, *state_args]  # fmt: skip
        return keys, args, payload

    @staticmethod
    def _finished(winner: Any, payload: dict[str, Any]) -> dict[str, Any]:
        if winner is not None:
            return dict(json.loads(winner))
        return payload

    def execute(
        self, raw: Any, task_id: str, queue: str | None, headers: dict[str, Any]
    ) -> dict[str, Any] | FanOut:
        """Run one event in the calling pool thread: its result, or the fan-out to send."""
        begun = self.begin(raw, task_id, queue, headers)
        if isinstance(begun, dict):
            return begun
        try:
            state = self.load_state(begun)
            result = self.run_agent(begun.agent, begun.event, state)
        except Exception as exc:
            raise self.failure(begun, exc) from exc
        if isinstance(result, CallTools):
            return self.fan_out(begun, result, step=1)
        return self.finish(begun, result)

    def prepare_resume(
        self, raw_results: Any, raw: Any, context: dict[str, Any], task_id: str,
        queue: str | None, headers: dict[str, Any],
    ) -> tuple[Begun, list[ToolResult], int] | dict[str, Any]:  # fmt: skip
        """A continuation's event, results in call order and step; or the stored result."""
        event, agent = self.parse(raw)
        stored = self.redis.get(self._done_key(event))
        return self._prepared(raw_results, raw, context, task_id, queue, headers, event,
                              agent, stored)  # fmt: skip

    async def prepare_resume_async(
        self, raw_results: Any, raw: Any, context: dict[str, Any], task_id: str,
        queue: str | None, headers: dict[str, Any], batch: ScriptBatch,
    ) -> tuple[Begun, list[ToolResult], int] | dict[str, Any]:  # fmt: skip
        """:meth:`prepare_resume` on the process loop, its read in the loop's batch."""
        event, agent = self.parse(raw)
        stored = await batch.command("GET", self._done_key(event))
        return self._prepared(raw_results, raw, context, task_id, queue, headers, event,
                              agent, stored)  # fmt: skip

    def _done_key(self, event: Event) -> str:
        return f"{self.prefix}:done:{event.dedup_key}"

    def _claim_key(self, event: Event) -> str:
        return f"{self.prefix}:claim:{event.dedup_key}"

    def _prepared(
        self, raw_results: Any, raw: Any, context: dict[str, Any], task_id: str,
        queue: str | None, headers: dict[str, Any], event: Event, agent: Agent, stored: Any,
    ) -> tuple[Begun, list[ToolResult], int] | dict[str, Any]:  # fmt: skip
        from agentflow.tools import fanout

        if stored is not None:  # a redelivered continuation: the first one finished
            return dict(json.loads(stored))
        begun = Begun(event, agent, raw, task_id, queue, headers, time.time(),
                      self._done_key(event), self._claim_key(event))  # fmt: skip
        return begun, fanout.results_in_order(raw_results, context), fanout.step_of(context)

    def resume(
        self, raw_results: Any, raw: Any, context: dict[str, Any], task_id: str,
        queue: str | None, headers: dict[str, Any],
    ) -> dict[str, Any] | FanOut:  # fmt: skip
        """Continue an agent after a fan-out (the chord's body): its result, or the next one."""
        from agentflow.tools import fanout

        prepared = self.prepare_resume(raw_results, raw, context, task_id, queue, headers)
        if isinstance(prepared, dict):
            return prepared
        begun, results, step = prepared
        try:
            state = self.load_state(begun)
            result = self.resume_agent(begun.agent, begun.event, state,
                                       fanout.user_context(context), results)  # fmt: skip
        except Exception as exc:
            raise self.failure(begun, exc) from exc
        if isinstance(result, CallTools):
            return self.fan_out(begun, result, step=step + 1)
        return self.finish(begun, result)

    async def resume_agent_async(
        self, agent: Agent, event: Event, state: State, context: dict[str, Any],
        results: list[ToolResult],
    ) -> AgentResult | CallTools:  # fmt: skip
        """:meth:`resume_agent` on the process loop (direct execution)."""
        return await self._call_async(agent, event, inspect.iscoroutinefunction(agent.resume),
                                      agent.resume, event, state, context, results)  # fmt: skip


@dataclass
class FanOut:
    """An agent asked for tools: send `signature` in place of the current task."""

    signature: Any
    calls: int
    step: int


@dataclass
class Begun:
    """An event that passed validation and holds its claim."""

    event: Event
    agent: Agent
    raw: Any
    task_id: str
    queue: str | None
    headers: dict[str, Any]
    started: float
    done_key: str
    claim_key: str
    starts: int = 1
    loaded: float = 0.0

    @property
    def retry_key(self) -> str:
        """Where the reason of the last retry is kept (quoted by a later dead letter)."""
        prefix = self.done_key.rsplit(":done:", 1)[0]
        return f"{prefix}:retryreason:{self.task_id}"


@dataclass
class ResultMeta:
    """Celery's result-backend entry for a task, written by the finish script.

    The script writes ``head + <result JSON> + tail`` to `key` with `ttl` and publishes it
    on the channel of the same name, as Celery's Redis backend does.
    """

    key: str
    task_id: str
    ttl: int
    extra: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> tuple[str, str, str]:
        """(key, head, tail) of the entry."""
        date_done = datetime.now(UTC).isoformat()
        tail = {"traceback": None, "children": [], "date_done": date_done,
                "task_id": self.task_id, **self.extra}  # fmt: skip
        tail_json = json.dumps(tail, separators=(",", ":"))
        return self.key, '{"status":"SUCCESS","result":', "," + tail_json[1:]


async def _await(value: Any) -> Any:
    return await value


_local = threading.local()
_runner: EventRunner | None = None
_runner_pid: int | None = None
_runner_lock = threading.Lock()


def get_runner() -> EventRunner:
    """The process's EventRunner, built after fork on first use."""
    global _runner, _runner_pid
    if _runner is None or _runner_pid != os.getpid():
        with _runner_lock:
            if _runner is None or _runner_pid != os.getpid():
                _runner = EventRunner()
                _runner_pid = os.getpid()
    return _runner


def reset_runner() -> None:
    """Forget the process's runner (tests, after configuration changes)."""
    global _runner
    _runner = None
