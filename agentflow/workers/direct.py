"""Direct execution: events run on the worker's event loop, not on a pool thread each.

Celery hands every task message to its *strategy* (a documented extension point:
``Task.Strategy``), which by default wraps it in a ``Request`` and queues it on the pool. On a
``threads`` or ``solo`` worker, the strategy of AgentFlow's three tasks — `agentflow.run_event`
(an event), `agentflow.run_tool` (one tool call, maybe a chord member) and
`agentflow.resume_event` (a fan-out's continuation) — instead starts the work as a coroutine
on the process's asyncio loop (:mod:`agentflow._aio`): async agents, tools and their LLM calls
share that loop, so hundreds of events are in flight without hundreds of threads fighting over
the GIL. Blocking sync agents and tools still get a helper thread.

Nothing about delivery changes: the message stays unacked (``acks_late``) until the result is
stored, so a killed worker's events are redelivered; the claim/finish scripts keep a
redelivered event to one result; at most `concurrency` events run at once and the prefetch
limit still bounds what a worker takes. The finish script also writes Celery's result-backend
entry and publishes it, so producers (``AsyncResult.get``, Flower's API) see the result as
usual.

Messages this path does not take go to Celery's own strategy: `[runner] execution = "pool"`,
a result backend other than the broker's Redis database, the prefork pool, task events
switched on (Flower's live view needs Celery's request machinery), an ETA or countdown
(retries), expiry, revoked ids, and canvas members other than a tool call in a chord
(callbacks, chains, an event inside a chord).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import bootsteps
from celery.app.task import Context
from celery.backends.redis import RedisBackend
from celery.worker.strategy import default as default_strategy

from agentflow import _aio
from agentflow.broker import messages
from agentflow.broker.connection import get_async_redis, get_redis
from agentflow.broker.publish import same_redis
from agentflow.broker.queues import RUN_EVENT_TASK
from agentflow.broker.transport import QoS as TransportQoS
from agentflow.config import get_settings
from agentflow.errors import ConfigError
from agentflow.metrics import get_metrics
from agentflow.tasks.runner import ENQUEUED_AT_HEADER, ResultMeta, RetryLater, get_runner
from agentflow.tasks.script_batch import ScriptBatch
from agentflow.tools.calls import CallTools
from agentflow.tools.fanout import RESUME_TASK
from agentflow.tools.tasks import RUN_TOOL_TASK

log = logging.getLogger("agentflow.direct")

_DIRECT_POOLS = ("celery.concurrency.thread", "celery.concurrency.solo")
_KINDS = {RUN_EVENT_TASK: "event", RUN_TOOL_TASK: "tool", RESUME_TASK: "resume"}
_CANVAS_KEYS = ("callbacks", "errbacks", "chain", "chord")


class _Tracker:
    """Events running on the loop: a count for shutdown and a bound on concurrency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.idle = threading.Event()
        self.idle.set()
        self.stopping = False
        self.semaphore: asyncio.Semaphore | None = None
        self.limit = 1
        self.connection_errors: tuple[type[BaseException], ...] = ()

    def started(self) -> None:
        with self.lock:
            self.running += 1
            self.idle.clear()

    def finished(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running <= 0:
                self.idle.set()


tracker = _Tracker()
_batch: ScriptBatch | None = None


def _backend_threads() -> ThreadPoolExecutor:
    """Threads for Celery result-backend calls that block (a chord member's result)."""
    return _aio.executor("backend", 8)


def _script_batch() -> ScriptBatch:
    """The loop's batch of begin/finish script calls (call it on the process loop)."""
    global _batch
    if _batch is None or _batch.loop is not asyncio.get_running_loop():
        _batch = ScriptBatch(get_async_redis())
    return _batch


def uses_direct(task: Any, consumer: Any) -> str | None:
    """None when this worker runs events directly, else why not."""
    if task.name not in _KINDS:
        return "not an AgentFlow task"
    if get_settings().runner.execution != "direct":
        return "[runner] execution = pool"
    if type(consumer.pool).__module__ not in _DIRECT_POOLS:
        return f"pool {type(consumer.pool).__module__.rsplit('.', 1)[-1]} runs tasks itself"
    dispatcher = consumer.event_dispatcher
    groups = getattr(dispatcher, "groups", None)
    task_events = dispatcher is not None and dispatcher.enabled and (not groups or "task" in groups)
    if task_events and task.send_events:
        return "task events are on"
    backend = task.app.backend
    if not isinstance(backend, RedisBackend) or not same_redis(backend.client, get_redis()):
        # The finish script writes Celery's result entry through the broker's Redis.
        return "the result backend is not the broker's Redis database"
    return None


def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """The strategy of AgentFlow's tasks: direct execution where possible, else Celery's."""
    fallback = default_strategy(task, app, consumer, **kwargs)
    why_not = uses_direct(task, consumer)
    if why_not is not None:
        log.info("direct execution off for %s: %s", task.name, why_not)
        return fallback
    tracker.limit = max(1, int(getattr(consumer.pool, "limit", 0) or 1))
    tracker.connection_errors = tuple(consumer.connection_errors)
    revoked = consumer.controller.state.revoked
    backend = app.backend
    meta_ttl = int(get_settings().broker.result_expires)

    kind = _KINDS[task.name]

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                **extra: Any) -> Any:  # fmt: skip
        headers = message.headers
        if (
            body is not None
            or tracker.stopping
            or not isinstance(headers, dict)
            or headers.get("eta")
            or headers.get("expires")
            or headers.get("id") in revoked
        ):
            return fallback(message, body, ack, reject, callbacks, **extra)
        try:
            args, kwargs, embed = messages.decode(message)
        except Exception:
            return fallback(message, body, ack, reject, callbacks, **extra)
        embed = embed if isinstance(embed, dict) else {}
        # A tool call may be a chord's member (Celery's backend then counts it in); anything
        # else on a canvas (callbacks, chains, a chord around an event) takes Celery's path.
        allowed = ("chord",) if kind == "tool" else ()
        if any(embed.get(k) for k in _CANVAS_KEYS if k not in allowed):
            return fallback(message, body, ack, reject, callbacks, **extra)
        task_id = str(headers["id"])
        queue = (message.delivery_info or {}).get("routing_key")
        work: Any
        if kind == "tool":
            request = Context({**headers, **embed, "args": args, "kwargs": kwargs,
                               "delivery_info": message.delivery_info, "is_eager": False,
                               "hostname": consumer.hostname})  # fmt: skip
            work = _run_tool(task, args, kwargs, task_id, request, message)
        else:
            meta = ResultMeta(backend.get_key_for_task(task_id).decode(), task_id, meta_ttl)
            if kind == "resume":
                work = _run_resume(task, args, kwargs, task_id, queue, headers, meta,
                                   message)  # fmt: skip
            else:
                raw = args[0] if len(args) == 1 and not kwargs else {
                    "event": args[0] if args else None, "args": args[1:], "kwargs": kwargs}  # fmt: skip
                work = _execute(task, raw, args, kwargs, task_id, queue, headers, meta,
                                message)  # fmt: skip
        tracker.started()
        try:
            _aio.submit(_run(work, ack, message))
        except BaseException:
            tracker.finished()
            work.close()
            raise
        return None

    log.info("direct execution on for %s: runs on the worker's event loop, up to %d at once",
             task.name, tracker.limit)  # fmt: skip
    return handler


def _agent_name(raw: Any, queue: str | None) -> str:
    if isinstance(raw, dict) and raw.get("agent"):
        return str(raw["agent"]).replace(".", "_")
    return (queue or "unknown").rsplit(".", 1)[-1]


def _ack(ack: Any, message: Any) -> None:
    errors = tracker.connection_errors
    if tracker.stopping:
        # The consumer's loop no longer runs the callbacks it is handed: ack here.
        message.ack_log_error(log, errors)
    else:
        ack(log, errors)  # runs message.ack on the consumer's own thread


async def _run(work: Any, ack: Any, message: Any) -> None:
    """Run one message's work under the concurrency bound; ack when it says so."""
    if tracker.semaphore is None:
        tracker.semaphore = asyncio.Semaphore(tracker.limit)
    try:
        async with tracker.semaphore:
            if await work:
                _ack(ack, message)
    except Exception:
        # Not acked: the message is redelivered after the visibility timeout.
        log.exception("direct execution failed unexpectedly; the message stays unacked")
    finally:
        tracker.finished()


async def _execute(
    task: Any,
    raw: Any,
    args: Any,
    kwargs: Any,
    task_id: str,
    queue: str | None,
    headers: dict[str, Any],
    meta: ResultMeta,
    message: Any = None,
) -> bool:
    """An event (`agentflow.run_event`); True when its message may be acked."""
    runner = get_runner()
    metrics = get_metrics()
    name = _agent_name(raw, queue)
    started = time.time()
    metrics.incr(f"events.received.{name}")
    enqueued = headers.get(ENQUEUED_AT_HEADER)
    if isinstance(enqueued, int | float):
        metrics.timing(f"event.queue_wait.{name}", max(0.0, started - enqueued) * 1000)
    try:
        begun = await runner.begin_async(raw, task_id, queue, headers, _script_batch())
        if isinstance(begun, dict):  # finished before: answer for this task id too
            await _store_meta(meta, begun)
        else:
            state = runner.load_state(begun)
            try:
                result = await runner.run_agent_async(begun.agent, begun.event, state)
            except Exception as exc:
                raise runner.failure(begun, exc) from exc
            if isinstance(result, CallTools):
                await _replace(runner.fan_out(begun, result, step=1), task_id, headers,
                               message)  # fmt: skip
                metrics.incr(f"events.fanned_out.{name}")
                return True
            settle = _settle_args(message)
            await runner.finish_async(begun, result, _script_batch(), meta=meta, settle=settle)
            _settled(message, settle)
        now = time.time()
        metrics.timing(f"event.run_time.{name}", (now - started) * 1000)
        metrics.incr(f"events.succeeded.{name}")
        if isinstance(enqueued, int | float):
            metrics.timing(f"event.latency.{name}", max(0.0, now - enqueued) * 1000)
    except RetryLater as later:
        metrics.incr(f"events.retried.{name}")
        return _retry_later(task, args, kwargs, task_id, queue, headers, later)
    except Exception as exc:
        metrics.incr(f"events.failed.{name}")
        return _store_failure(task, task_id, exc)
    return True


async def _replace(fan: Any, task_id: str, headers: dict[str, Any], message: Any = None) -> None:
    """``Task.replace`` by hand (there is no Celery request here): the fan-out's chord body
    takes this task's id, so it stores the event's result when the agent is done. The
    transaction that sends the chord also settles the event's own message (see
    :meth:`QoS.settled`)."""
    from agentflow.tools import fanout

    signature = fan.signature
    nesting = int(headers.get("replaced_task_nesting") or 0) + 1
    settle = _settle_args(message)
    if await fanout.send_async(signature.app, signature, task_id, root_id=headers.get("root_id"),
                               nesting=nesting, settle=settle):  # fmt: skip
        _settled(message, settle)
        return
    signature.freeze(task_id)
    signature.set(replaced_task_nesting=nesting)
    signature.apply_async()


def _settle_args(message: Any) -> tuple[str, str, str] | None:
    """kombu's unacked keys and the delivery tag, when the channel is AgentFlow's."""
    qos = getattr(getattr(message, "channel", None), "qos", None)
    if not isinstance(qos, TransportQoS) or message.delivery_tag is None:
        return None
    unacked, index = qos.settle_keys()
    return unacked, index, str(message.delivery_tag)


def _settled(message: Any, settle: tuple[str, str, str] | None) -> None:
    """Tell the channel the message's Redis entries are gone (when `settle` removed them),
    so the ack that follows makes no round trip."""
    if settle is not None:
        message.channel.qos.settled(message.delivery_tag)


def _store_failure(task: Any, task_id: str, exc: BaseException) -> bool:
    try:
        task.backend.mark_as_failure(task_id, exc)
    except Exception:
        log.exception("task %s: could not store its failure; left for redelivery", task_id)
        return False
    return True


async def _run_tool(
    task: Any, args: Any, kwargs: Any, task_id: str, request: Any, message: Any = None
) -> bool:
    """A tool call (`agentflow.run_tool`), maybe a chord member: Celery's backend stores
    the result and, for the chord's last member, sends the chord's body."""
    from agentflow.tools.tasks import execute_tool_async

    call = args[0] if args else kwargs.get("call")
    event_id = args[1] if len(args) > 1 else kwargs.get("event_id")
    result = await execute_tool_async(call, event_id)
    settle = _settle_args(message)
    try:
        # On a helper thread: Celery's chord bookkeeping makes up to six blocking round
        # trips for the last member, and the loop has other events to run meanwhile.
        store = functools.partial(_store_tool_result, task, task_id,
                                  result.model_dump(mode="json"), request, settle)  # fmt: skip
        settled = await asyncio.get_running_loop().run_in_executor(_backend_threads(), store)
    except Exception:
        log.exception("tool call %s: could not store its result; left for redelivery", task_id)
        return False
    _settled(message, settle if settled else None)
    return True


def _store_tool_result(
    task: Any, task_id: str, value: Any, request: Any, settle: tuple[str, str, str] | None
) -> bool:
    """Store a tool call's result, then settle its message; True when it is settled."""
    # A chord member's result goes to the chord (Celery's backend stashes it for the body);
    # a tool call outside a chord keeps its own result entry for whoever sent it.
    task.backend.mark_as_done(task_id, value, request=request, store_result=not request.chord)
    if settle is None:
        return False
    unacked, index, tag = settle
    try:
        pipe = get_runner().redis.pipeline(transaction=False)
        pipe.hdel(unacked, tag)
        pipe.zrem(index, tag)
        pipe.execute()
    except Exception:
        log.warning("tool call %s: settling its message failed; kombu acks it", task_id)
        return False
    return True


async def _run_resume(
    task: Any, args: Any, kwargs: Any, task_id: str, queue: str | None,
    headers: dict[str, Any], meta: ResultMeta, message: Any = None,
) -> bool:  # fmt: skip
    """A fan-out's continuation (`agentflow.resume_event`, the chord's body)."""
    from agentflow.tools import fanout

    runner = get_runner()
    metrics = get_metrics()
    results, raw, context = [*list(args), None, None, None][:3]
    context = context or {}
    try:
        prepared = await runner.prepare_resume_async(results, raw, context, task_id, queue,
                                                     headers, _script_batch())  # fmt: skip
        if isinstance(prepared, dict):
            await _store_meta(meta, prepared)
            return True
        begun, ordered, step = prepared
        name = begun.agent.name.replace(".", "_")
        state = runner.load_state(begun)
        try:
            result = await runner.resume_agent_async(
                begun.agent, begun.event, state, fanout.user_context(context), ordered
            )
        except Exception as exc:
            raise runner.failure(begun, exc) from exc
        if isinstance(result, CallTools):
            await _replace(runner.fan_out(begun, result, step=step + 1), task_id, headers,
                           message)  # fmt: skip
            return True
        settle = _settle_args(message)
        await runner.finish_async(begun, result, _script_batch(), meta=meta, settle=settle)
        _settled(message, settle)
        metrics.incr(f"events.succeeded.{name}")
        enqueued = headers.get(ENQUEUED_AT_HEADER)
        if isinstance(enqueued, int | float):
            metrics.timing(f"event.latency.{name}", max(0.0, time.time() - enqueued) * 1000)
    except RetryLater as later:
        return _retry_later(task, args, kwargs, task_id, queue, headers, later)
    except Exception as exc:
        return _store_failure(task, task_id, exc)
    return True


async def _store_meta(meta: ResultMeta, payload: dict[str, Any]) -> None:
    """Celery's result entry for a task whose event finished before (a redelivery or a
    duplicate): written and published in the loop's batch, as the finish script would."""
    key, head, tail = meta.parts()
    value = head + json.dumps(payload, separators=(",", ":")) + tail
    batch = _script_batch()
    await asyncio.gather(batch.command("SET", key, value, "EX", meta.ttl),
                         batch.command("PUBLISH", key, value))  # fmt: skip


def _retry_later(
    task: Any,
    args: Any,
    kwargs: Any,
    task_id: str,
    queue: str | None,
    headers: dict[str, Any],
    later: RetryLater,
) -> bool:
    """Publish the message again with a countdown (what ``Task.retry`` does), same task id.

    True when the retry is on its way (ack the original); False leaves the original unacked,
    to be redelivered after the visibility timeout.
    """
    stamps = {k: v for k, v in headers.items() if k.startswith("agentflow_")}
    try:
        task.apply_async(
            args=args, kwargs=kwargs, task_id=task_id, countdown=later.countdown, queue=queue,
            retries=int(headers.get("retries") or 0) + 1, headers=stamps,
        )  # fmt: skip
    except Exception:
        log.exception("task %s: could not schedule its retry; left for redelivery", task_id)
        return False
    # Celery's own wording, so that log searches for retries find these too.
    log.info("Task %s[%s] retry: Retry in %ss: %s", task.name, task_id,
             round(later.countdown, 3), later.reason)  # fmt: skip
    return True


class DirectExecution(bootsteps.StartStopStep):
    """Consumer bootstep: refuse green pools; on shutdown, let running events finish and ack."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        pool = type(c.pool).__module__.rsplit(".", 1)[-1]
        if pool in ("gevent", "eventlet"):
            raise ConfigError(
                f"AgentFlow workers cannot run on the {pool} pool: its monkey-patching breaks "
                "the per-process asyncio loop that carries LLM calls (events would never "
                "finish). Use -P threads (the default, with direct execution) or -P prefork."
            )
        tracker.stopping = False

    def stop(self, c: Any) -> None:
        tracker.stopping = True
        limit = get_settings().runner.hard_time_limit
        if not tracker.idle.wait(limit):
            log.warning("%d direct events still running at shutdown; they will be redelivered",
                        tracker.running)  # fmt: skip

    def shutdown(self, c: Any) -> None:
        self.stop(c)
