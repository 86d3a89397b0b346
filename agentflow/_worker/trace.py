"""Celery's tracer, for a request that runs as a coroutine on the worker's event loop.

What ``celery.app.trace.build_tracer`` does around a task's function, done here around the
runner's coroutine: the request context pushed for each signal, ``task_prerun`` and
``task_postrun`` around every attempt, ``task_success`` or ``task_failure`` (with Celery's
arguments), the result stored, and the request's own callbacks called to ack it and send
its events. What differs, and why:

- A successful event's result entry is written by the runner's finish script, together with
  the result, the state delta and the message's settlement (one round trip).
- A retry (the LLM is unavailable) waits on the loop and runs again under the same
  message, which stays unacked until a result is stored (Celery would publish a copy with a
  countdown and ack the original). ``task_retry`` and ``task-retried`` fire as usual.
- A fan-out replaces the task like ``Task.replace``: its state is IGNORED, the message is
  acked, and the chord's body later stores the result under the event's id. So does a
  wait (``WaitFor``): the event's result entry reads WAITING until its resume stores it.
- An error of the infrastructure (Redis unreachable) is not the event's failure: the
  message goes back to its queue as for a lost worker (``WorkerLostError``), and
  ``[runner] max_redeliveries`` caps how often.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from billiard.einfo import ExceptionInfo
from celery import signals, states
from celery.app import trace as celery_trace
from celery.app.task import Context
from celery.exceptions import Ignore, Retry, WorkerLostError
from celery.worker import state as worker_state
from kombu.utils.encoding import safe_repr

from agentflow import _aio
from agentflow._redis.connection import get_async_redis
from agentflow._redis.messages import short_repr
from agentflow._redis.scripts import Script
from agentflow._redis.transport import QoS as TransportQoS
from agentflow._worker import chord_join
from agentflow._worker.runner import (
    Done,
    FannedOut,
    Job,
    Outcome,
    ResultMeta,
    RetryLater,
    Revoked,
    Suspended,
    get_runner,
)
from agentflow.errors import AgentError, EventRejected

if TYPE_CHECKING:
    from agentflow._worker.asyncio_pool import AsyncJob

log = logging.getLogger("agentflow.trace")
_FAILURES = (EventRejected, AgentError)
"""What a failed event raises: it is dead-lettered, its result says why, its message acked."""


def _backend_threads() -> Any:
    """Threads for Celery result-backend calls that block (failures, chord bookkeeping)."""
    return _aio.executor("backend", 8)


async def _blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn` on a backend thread, in the caller's context (as ``asyncio.to_thread``): what it
    publishes (a chord's continuation) is traced under the task's span."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_backend_threads(), call)


def revoked_now(request: Any) -> bool:
    """Whether `request` was revoked or expired since Celery checked (cheap, any thread)."""
    return bool(request.id in worker_state.revoked or (request.expires and _expired(request)))


def _expired(request: Any) -> bool:
    from datetime import datetime, timezone

    expires = request.expires
    now = datetime.now(timezone.utc if expires.tzinfo else None)  # noqa: UP017
    return bool(now > expires)


async def run(job: AsyncJob) -> None:
    """Run `job` to its end: wait for a slot, run, retry on the loop when asked."""
    pool, request = job.pool, job.request
    attempt = 0
    while True:
        sem = pool.semaphore()
        try:
            await sem.acquire()
        except asyncio.CancelledError:
            _not_started(job)
            return
        try:
            if job.cancel_requested is not None and not job.started:
                _not_started(job)
                return
            if revoked_now(request):
                pool.on_request_thread(request.revoked)  # Celery announces and acks it
                return
            if not job.started:
                job.started = True
                pool.on_request_thread(job.accept_callback, os.getpid(), time.monotonic())
            later = await _attempt(job, attempt)
        finally:
            sem.release()
        if later is None:
            return
        if pool.stopping:
            # Shutting down: leave it unacked; kombu puts it back on its queue at close.
            log.info("task %s: retry left to another worker (shutting down)", job.task_id)
            return
        try:
            await asyncio.sleep(later.countdown)
        except asyncio.CancelledError:
            if job.cancel_requested == "revoked":
                return  # Celery's terminate announced it
            raise
        attempt += 1


def _not_started(job: AsyncJob) -> None:
    """Cancelled while it waited for a slot."""
    if job.cancel_requested == "shutdown":
        return  # unacked: kombu restores it
    worker_state.revoked.add(job.task_id)
    job.pool.on_request_thread(job.request.revoked)


class RequestContext:
    """Celery's task request context of a job, built only when something needs it (a
    signal with receivers, the result backend): most events need none."""

    def __init__(self, job: AsyncJob) -> None:
        self.request_dict: dict[str, Any] = job.args[2]
        args, kwargs, embed = job.request.message.payload
        self.args = list(args)
        self.kwargs = dict(kwargs)
        self.embed: dict[str, Any] = embed if isinstance(embed, dict) else {}
        self.retries = 0

    @functools.cached_property
    def ctx(self) -> Context:
        """The Context Celery's tracer would push for this request."""
        ctx = Context({**self.request_dict, **self.embed}, args=self.args, kwargs=self.kwargs,
                      called_directly=False, is_eager=False)  # fmt: skip
        if self.retries:
            ctx.retries = int(ctx.retries or 0) + self.retries
        return ctx


def _task_events(request: Any) -> bool:
    """Whether the request's task events are being sent (``-E``, ``enable_events``)."""
    eventer = request.eventer
    if eventer is None or not eventer.enabled or not request.task.send_events:
        return False
    groups = eventer.groups
    return not groups or "task" in groups


def _settle_args(message: Any) -> tuple[str, str, str] | None:
    """kombu's unacked keys and the delivery tag, when the channel is AgentFlow's."""
    qos = getattr(getattr(message, "channel", None), "qos", None)
    if not isinstance(qos, TransportQoS) or message.delivery_tag is None:
        return None
    unacked, index = qos.settle_keys()
    return unacked, index, str(message.delivery_tag)


def _send(signal: Any, sender: Any, rc: RequestContext, **kwargs: Any) -> None:
    """Fire `signal` with the request pushed, as Celery's tracer does."""
    if not signal.receivers:
        return
    stack = sender.request_stack
    stack.push(rc.ctx)
    try:
        signal.send(sender=sender, **kwargs)
    except Exception:
        log.exception("a %s handler failed", signal.name)
    finally:
        stack.pop()


def _einfo(exc: BaseException) -> ExceptionInfo:
    if exc.__traceback__ is None:
        try:
            raise exc
        except BaseException:
            return ExceptionInfo()
    return ExceptionInfo((type(exc), exc, exc.__traceback__))


async def _attempt(job: AsyncJob, attempt: int) -> RetryLater | None:
    """One run of the request: RetryLater when it should run again."""
    pool, request = job.pool, job.request
    task = request.task
    task_id = job.task_id
    rc = RequestContext(job)
    rc.retries = attempt
    args, kwargs = rc.args, rc.kwargs
    queue = (request.delivery_info or {}).get("routing_key")
    runner = get_runner()
    meta = None
    if job.args[0] != "agentflow.run_tool" and pool.results_in_script:
        meta = ResultMeta.for_request(task.backend, task_id, {**rc.request_dict, **rc.embed,
                                                              "args": args, "kwargs": kwargs},
                                      runner.result_ttl)  # fmt: skip
    # The message is settled in the script that stores the result only when that is where
    # the result goes; else it is acked once Celery's backend has stored it.
    settle = _settle_args(request.message) if pool.results_in_script else None
    work = Job(task_id, job.args[0], args, kwargs, rc.embed, rc.request_dict, queue, meta, settle)
    job.current = work
    _send(signals.task_prerun, task, rc, task_id=task_id, task=task, args=args, kwargs=kwargs)
    started = time.monotonic()
    state, retval = states.FAILURE, None
    try:
        outcome = await runner.run(work)
        state, retval = await _finished(job, rc, work, outcome, time.monotonic() - started)
    except RetryLater as later:
        state, retval = states.RETRY, later
        if not later.quiet:
            await _retry(job, rc, later)
        return later
    except asyncio.CancelledError:
        state = states.REVOKED
        if job.cancel_requested != "revoked":
            raise  # shutdown: no ack, no result; kombu puts the message back
    except _FAILURES as exc:
        retval = exc
        await _failed(job, rc, exc, time.monotonic() - started)
    except Exception as exc:
        retval = exc
        _lost(job, exc, time.monotonic() - started)
    finally:
        if signals.task_postrun.receivers:
            if isinstance(retval, Done):
                retval = retval.result
            _send(signals.task_postrun, task, rc, task_id=task_id, task=task, args=args,
                  kwargs=kwargs, retval=retval, state=state)  # fmt: skip
    return None


async def _finished(job: AsyncJob, rc: RequestContext, work: Job, outcome: Outcome,
                    runtime: float) -> tuple[str, Any]:  # fmt: skip
    """Store, signal and ack a request whose run ended with `outcome`."""
    pool, request = job.pool, job.request
    task = request.task
    message = request.message
    if isinstance(outcome, Revoked):
        worker_state.revoked.add(job.task_id)
        pool.on_request_thread(request.revoked)
        await _end_stream(job.task_id)
        return states.REVOKED, None
    if isinstance(outcome, FannedOut | Suspended):
        # A fan-out or a wait (WaitFor: the event waits in Redis for its signal) ends this
        # request without a result of its own.
        if outcome.settled:
            message.channel.qos.settled(message.delivery_tag)
        # Replaced, as by ``Task.replace``: Celery's request acks on Ignore. (Only the
        # exception is read on that path; billiard's ExceptionInfo walks the stack.)
        pool.on_request_thread(job.callback, (True, _Replaced(), runtime))
        return states.IGNORED, None
    assert isinstance(outcome, Done)
    # The result is decoded only where something reads it (see Done).
    if work.name == "agentflow.run_tool":
        ctx = rc.ctx
        result = outcome.result
        on_loop = work.settle is not None and chord_join.joins_here(task.backend, ctx)
        waiting = await _store_tool_result(task.backend, ctx, result, work.settle, on_loop)
        if waiting and not await _chord_dispatched(task, ctx, result, on_loop):
            _lost(job, RuntimeError("its chord's continuation was not sent yet"), runtime)
            return states.SUCCESS, outcome
        if work.settle is not None:
            if waiting:  # sent since: settle now
                await _settle_member(task.backend, ctx, work.settle)
            message.channel.qos.settled(message.delivery_tag)
    elif work.meta is None:  # the result backend is elsewhere: Celery's backend stores it
        await _blocking(task.backend.mark_as_done, job.task_id, outcome.result, request=rc.ctx)
    elif outcome.replayed:
        await _store_meta(work.meta, outcome.result)
    if outcome.settled:
        message.channel.qos.settled(message.delivery_tag)
    if signals.task_success.receivers:
        _send(signals.task_success, task, rc, result=outcome.result, runtime=runtime)
    logging_it = celery_trace.logger.isEnabledFor(logging.INFO)
    # What the task-succeeded event and the log line show of the result: its JSON text
    # when the runner has it (no decoding), else its repr.
    shown = _shown(outcome) if logging_it or _task_events(request) else ""
    if logging_it:  # Celery's own success line
        celery_trace.info(celery_trace.LOG_SUCCESS, {
            "id": job.task_id, "name": task.name, "return_value": shown, "runtime": runtime,
            "args": rc.request_dict.get("argsrepr") or "",
            "kwargs": rc.request_dict.get("kwargsrepr") or ""})  # fmt: skip
    pool.on_request_thread(job.callback, (False, shown, runtime))
    return states.SUCCESS, outcome


def _shown(outcome: Done) -> str:
    """The result as the task-succeeded event and Celery's log line show it, cut at 256."""
    encoded = outcome.encoded
    if encoded is None:
        return short_repr(outcome.result, 256)
    text = encoded if isinstance(encoded, str) else encoded.decode("utf-8", "replace")
    return text if len(text) <= 256 else text[:253] + "..."


class _Replaced:
    """What Celery's request reads of a replaced task's outcome: an Ignore."""

    exception = Ignore()
    traceback = None
    internal = True


_SETTLE_MEMBER = Script("settle_member")


async def _store_tool_result(backend: Any, ctx: Context, result: Any,
                             settle: tuple[str, str, str] | None, on_loop: bool) -> bool:  # fmt: skip
    """Store a tool call's result (a chord member's joins its chord, and the last one sends
    the chord's continuation), then settle its message; True when its chord waits to be
    sent (nothing was settled). `on_loop`: the chord is joined on the loop's batch
    (:mod:`agentflow._worker.chord_join`), else by Celery's backend on a helper thread."""
    if on_loop:
        await chord_join.join(backend, ctx, result)
    else:
        await _blocking(backend.mark_as_done, ctx.id, result, request=ctx,
                        store_result=not ctx.chord)  # fmt: skip
    return await _settle_member(backend, ctx, settle)


async def _settle_member(backend: Any, ctx: Context,
                         settle: tuple[str, str, str] | None) -> bool:  # fmt: skip
    """Settle a stored tool call's message in the same script that checks whether its chord
    still waits to be sent; True when it waits (then nothing was settled)."""
    group = ctx.group if ctx.chord else None
    if group is None and settle is None:
        return False
    keys = ["", "", "", "", ""]
    if group is not None:
        keys[:3] = [backend.get_key_for_group(group, suffix) for suffix in (".s", ".t", ".j")]
    if settle is None:  # the result backend may be another Redis: ask it
        return bool(await _blocking(_SETTLE_MEMBER, backend.client, keys, [""]))
    # With a message to settle the result backend is the broker's database (else the
    # message is not settled in scripts): the loop's batch runs it with other events' calls.
    keys[3:] = list(settle[:2])
    return bool(await get_runner().batch().call(_SETTLE_MEMBER, keys, [settle[2]]))


CHORD_RETRY_FIRST = 0.01
CHORD_RETRY_MAX = 2.0
CHORD_RETRY_FOR = 90.0


async def _chord_dispatched(task: Any, ctx: Context, result: Any, on_loop: bool) -> bool:
    """Whether the chord this tool call belongs to has sent its continuation (or will
    without this call). Celery's Redis backend lets one worker claim the sending for up to
    ~20 s; a worker killed while it holds the claim never sends, and a member that comes
    back within that time gives up. So a member whose chord is complete but not sent holds
    on to its message and joins again until the claim runs out and it sends the body itself
    (the join counts each member once); it lets the message go only once the body is sent.
    Called when the member's settle script has just found the chord waiting, so it waits
    before it looks again; it joins again only if the body is still not sent then.
    `on_loop`: look and join on the loop's batch, else through Celery's backend."""
    backend = task.backend
    waited, interval = 0.0, CHORD_RETRY_FIRST
    while True:
        if waited >= CHORD_RETRY_FOR:
            return False  # leave it to a redelivery
        # Mostly another member is sending it right now: look again soon, then less often.
        await asyncio.sleep(interval)
        waited += interval
        interval = min(interval * 2, CHORD_RETRY_MAX)
        if not await _waiting(backend, ctx, on_loop):
            return True
        if on_loop:
            await chord_join.join(backend, ctx, result)
        else:
            await _blocking(backend.on_chord_part_return, ctx, states.SUCCESS, result)
        if not await _waiting(backend, ctx, on_loop):
            return True


async def _waiting(backend: Any, ctx: Context, on_loop: bool) -> bool:
    """:func:`chord_waiting`, on the loop's batch or on a helper thread."""
    if not on_loop:
        return bool(await _blocking(chord_waiting, backend, ctx))
    batch = get_runner().batch()
    size, diff, ready = await asyncio.gather(*(
        batch.command(cmd, backend.get_key_for_group(ctx.group, suffix))
        for cmd, suffix in (("GET", ".s"), ("GET", ".t"), ("ZCARD", ".j"))))  # fmt: skip
    return size is not None and int(ready) >= int(size) + int(diff or 0)


def chord_waiting(backend: Any, ctx: Context) -> bool:
    """True when `ctx`'s chord has every member's result but its body was not sent yet."""
    group = ctx.group
    if not group or not hasattr(backend, "get_key_for_group"):
        return False
    client = backend.client
    pipe = client.pipeline(transaction=False)
    pipe.get(backend.get_key_for_group(group, ".s"))
    pipe.get(backend.get_key_for_group(group, ".t"))
    jkey = backend.get_key_for_group(group, ".j")
    pipe.zcard(jkey) if getattr(backend, "_chord_zset", True) else pipe.llen(jkey)
    size, diff, ready = pipe.execute()
    return size is not None and int(ready) >= int(size) + int(diff or 0)


async def _store_meta(meta: ResultMeta, payload: Any) -> None:
    """Celery's result entry for a task whose event finished in an earlier run."""
    key, head, tail = meta.parts()
    value = head + json.dumps(payload, separators=(",", ":")) + tail
    batch = get_runner().batch()
    await asyncio.gather(batch.command("SET", key, value, "EX", meta.ttl),
                         batch.command("PUBLISH", key, value))  # fmt: skip


async def _failed(job: AsyncJob, rc: RequestContext, exc: BaseException,
                  runtime: float) -> None:  # fmt: skip
    """The event failed (and is dead-lettered): store FAILURE, signal, ack."""
    task = job.request.task
    einfo = _einfo(exc)
    try:
        await _blocking(task.backend.mark_as_failure, job.task_id, exc, einfo.traceback,
                        request=rc.ctx)  # fmt: skip
    except Exception as store_exc:
        _lost(job, store_exc, runtime)
        return
    _send(signals.task_failure, task, rc, task_id=job.task_id, exception=exc, args=rc.args,
          kwargs=rc.kwargs, traceback=einfo.tb, einfo=einfo)  # fmt: skip
    # Unwrapped, as Celery's tracer hands it to the request (``TraceInfo._log_error``): the
    # task-failed event shows the error, not "ExceptionWithTraceback()".
    einfo.exception = exc
    job.pool.on_request_thread(job.callback, (True, einfo, runtime))


def _lost(job: AsyncJob, exc: BaseException, runtime: float) -> None:
    """Not the event's fault (Redis unreachable, say): back to the queue, as for a lost
    worker; ``[runner] max_redeliveries`` caps how often."""
    log.warning("task %s could not run (%s: %s); its message goes back to the queue",
                job.task_id, type(exc).__name__, exc)  # fmt: skip
    try:
        raise WorkerLostError(f"AgentFlow could not run the task: {exc!r}") from exc
    except WorkerLostError:
        einfo = ExceptionInfo()
    job.pool.on_request_thread(job.request.on_failure, einfo, False, True)


async def _retry(job: AsyncJob, rc: RequestContext, later: RetryLater) -> None:
    """The run asked to be retried: store RETRY, signal, send task-retried."""
    task = job.request.task
    reason = Retry(message=later.reason, exc=later, when=later.countdown)
    einfo = _einfo(reason)
    try:
        await _blocking(task.backend.mark_as_retry, job.task_id, later, einfo.traceback,
                        request=rc.ctx)  # fmt: skip
    except Exception:
        log.warning("task %s: could not store its RETRY state", job.task_id, exc_info=True)
    _send(signals.task_retry, task, rc, request=rc.ctx, reason=reason, einfo=einfo)
    job.pool.on_request_thread(functools.partial(
        job.request.send_event, "task-retried", exception=safe_repr(later),
        traceback=einfo.traceback))  # fmt: skip
    # Celery's own wording, so that log searches for retries find these too.
    log.info("Task %s[%s] retry: Retry in %ss: %s", task.name, job.task_id,
             round(later.countdown, 3), later.reason)  # fmt: skip


async def _end_stream(event_id: str) -> None:
    """End the event's stream (if it has one) with a cancelled marker."""
    from agentflow.streams import end_cancelled

    try:
        await end_cancelled(get_async_redis(), event_id)
    except Exception:
        log.debug("could not end the stream of %s", event_id, exc_info=True)
