"""AgentFlow's worker pool: its tasks run as coroutines on the process's event loop.

A Celery worker hands every request to its pool (``pool.apply_async(trace, ..., callbacks)``,
see ``celery.worker.request``). This pool is Celery's threads pool for any other task; for
AgentFlow's tasks — `agentflow.run_event`, `agentflow.resume_event`,
`agentflow.signal_event` and `agentflow.run_tool` — it runs the work on the process's asyncio loop instead of a thread,
so hundreds of events and their LLM calls are in flight without hundreds of threads.

Everything before and after the run is Celery's own: the default strategy builds the
``Request`` (``task_received``, the ``task-received`` event, revoked and expired checks,
ETA/countdown timers, rate limits, ``inspect reserved``); the pool calls the request's own
callbacks, so ``on_accepted`` puts it in ``inspect active`` and sends ``task-started``,
``on_success``/``on_failure`` ack it, count it and send ``task-succeeded``/``task-failed``.
The pool fires ``task_prerun``, ``task_postrun``, ``task_success``, ``task_failure`` and
``task_retry`` with the arguments Celery's tracer gives them (:mod:`agentflow._worker.trace`).
``revoke(id, terminate=True)`` reaches the coroutine through the object this pool returns
for the request (Celery's ``Request.terminate`` calls its ``terminate``) and cancels it.

Warm shutdown waits for running work (the request callbacks then run on the loop's thread,
since the consumer's loop has stopped); cold shutdown cancels it without an ack, so kombu
puts the messages back on their queues.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from typing import Any

from celery.concurrency.thread import TaskPool as ThreadsPool

from agentflow import _aio
from agentflow._redis.queues import RUN_EVENT_TASK, SIGNAL_TASK
from agentflow._worker import task_events, trace
from agentflow._worker.runner import get_runner

log = logging.getLogger("agentflow.pool")

AGENTFLOW_TASKS = frozenset({RUN_EVENT_TASK, "agentflow.resume_event", "agentflow.run_tool",
                             SIGNAL_TASK})  # fmt: skip


class AsyncJob:
    """One request running on the loop; what ``apply_async`` returns to Celery."""

    def __init__(self, pool: AsyncPool, request: Any, callback: Any, accept_callback: Any,
                 args: tuple[Any, ...]) -> None:  # fmt: skip
        self.pool = pool
        self.request = request
        self.callback = callback
        self.accept_callback = accept_callback
        self.args = args
        self.task: asyncio.Task[Any] | None = None
        self.current: Any = None
        """The runner's view of the attempt in progress (a :class:`~agentflow._worker.runner.Job`)."""
        self.started = False
        self.cancel_requested: str | None = None
        """Why the job is cancelled: "revoked" (terminate), "event" (its event was
        cancelled: a tool call then completes with a "cancelled" error), "shutdown"."""

    @property
    def task_id(self) -> str:
        """The request's task id."""
        return str(self.request.id)

    def terminate(self, signal: Any = None) -> None:
        """Celery's ``Request.terminate`` (``revoke(..., terminate=True)``): cancel the run."""
        self.cancel("revoked")

    def cancel(self, why: str) -> None:
        """Cancel the job from any thread."""
        if self.cancel_requested is None:
            self.cancel_requested = why
        loop = _aio.get_loop()
        loop.call_soon_threadsafe(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self.cancel_requested == "event":
            if not self.started:
                return  # a tool call not started yet sees the cancel when it starts
            if self.current is not None:
                self.current.cancelled = True  # a tool call then ends with "cancelled"
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def run(self) -> None:
        """Wait for a slot, then run the request (see :mod:`agentflow._worker.trace`)."""
        self.task = asyncio.current_task()
        try:
            await trace.run(self)
        except asyncio.CancelledError:
            pass  # shutdown: unacked, kombu puts the message back on its queue
        except BaseException:
            log.exception("AgentFlow job %s failed unexpectedly; the message stays unacked",
                          self.task_id)  # fmt: skip
        finally:
            self.pool._finished(self)


class AsyncPool(ThreadsPool):
    """Celery's threads pool, with AgentFlow's tasks run on the process's event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[int, AsyncJob] = {}
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._hub: Any = None
        self._wake_r = self._wake_w = -1
        """The pipe that wakes the hub to run request callbacks (see
        :meth:`register_with_event_loop`)."""
        self._callbacks: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self._draining = False
        self._semaphores: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.stopping = False
        self.terminating = False
        self.results_in_script = True
        """Whether the runner's finish script may write Celery's result entry (the result
        backend is the broker's Redis database); else Celery's backend stores it."""

    def on_start(self) -> None:
        loop = _aio.get_loop()  # started now, not under the first message
        task_events.attach(loop, lambda: get_runner().batch())
        self.results_in_script = _results_in_script(self.app)
        if not self.results_in_script:
            log.info("results go through Celery's result backend: the result backend is not "
                     "the broker's Redis database")  # fmt: skip
        super().on_start()

    def register_with_event_loop(self, loop: Any) -> None:
        """Celery hands the pool the consumer's event loop (kombu's hub). Request callbacks
        run there when a pipe of the pool's own turns readable, as the results of Celery's
        prefork pool do: in the hub's reader phase, so what they give ``call_soon`` (Celery
        defers every ack that way) runs at the hub's very next turn, before the transport
        starts its next fetch. (Run from ``call_soon`` themselves, the acks waited for the
        hub's poll to time out, up to a second each: a worker with one free prefetch slot
        took one message a second.)"""
        if self._wake_r < 0:  # one pipe for the pool's life (Celery registers again after a
            # reconnect; a wake-up written meanwhile must still be read)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        loop.add_reader(self._wake_r, self._on_wake)
        self._hub = loop

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        self._run_callbacks()

    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency bound on the running loop (``-c``)."""
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(max(1, int(self.limit or 1)))
        return sem

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None, callback: Any = None,
                 accept_callback: Any = None, **options: Any) -> Any:  # fmt: skip
        if not args or args[0] not in AGENTFLOW_TASKS or accept_callback is None:
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        request = getattr(accept_callback, "__self__", None)
        if request is None:  # not Celery's Request: run it Celery's way
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        job = AsyncJob(self, request, callback, accept_callback, tuple(args))
        with self._lock:
            self.jobs[id(job)] = job
            self._idle.clear()
        try:
            _aio.submit(job.run())
        except BaseException:
            self._finished(job)
            raise
        return job

    def _finished(self, job: AsyncJob) -> None:
        with self._lock:
            self.jobs.pop(id(job), None)
            if not self.jobs:
                self._idle.set()

    def on_request_thread(self, fn: Any, *args: Any) -> None:
        """Call a request callback where Celery expects it: on the consumer's own thread
        (kombu's hub), or right here once the consumer has stopped (shutdown).

        In the order they were asked for: kombu's hub runs what ``call_soon`` gives it in no
        particular order (a set), and a request's ``on_success`` run before its
        ``on_accepted`` would leave it in ``inspect active`` (and Flower's active count) for
        good. So the callbacks wait in a queue that one thread at a time runs through: the
        hub's, or once the pool stops (the consumer's loop has ended) the caller's."""
        with self._lock:
            self._callbacks.append((fn, args))
            if self._draining:
                return  # whoever drains runs it, after those asked before
            self._draining = True
            here = self._hub is None or self.stopping
        if here:
            self._run_callbacks()
            return
        self._wake()

    def _wake(self) -> None:
        # Woken every time, even when the hub turned a moment ago: it may be about to sleep
        # in its poll (up to a second), holding the request's ack, its events and its place
        # in `inspect active`. One byte for any number of callbacks.
        with contextlib.suppress(BlockingIOError):  # full: wake-ups enough are pending
            os.write(self._wake_w, b"\0")

    def _run_callbacks(self) -> None:
        """The queued request callbacks, first asked first run (by the one drainer)."""
        done = False
        try:
            while True:
                with self._lock:
                    if not self._callbacks:
                        self._draining = False
                        done = True
                        return
                    fn, args = self._callbacks.popleft()
                try:
                    fn(*args)
                except Exception:
                    log.exception("a request callback failed: %r", fn)
        finally:
            if not done:  # a BaseException went through: the rest run at a new wake-up
                with self._lock:
                    left = bool(self._callbacks) and self._hub is not None
                    self._draining = left
                if left:
                    self._wake()

    def _drain_here(self) -> None:
        """The pool stops and the hub's loop has ended (Celery stops the consumer first):
        callbacks still queued for it run on this thread, in order."""
        with self._lock:
            self.stopping = True
            if not self._callbacks:
                return
            self._draining = True  # the hub will not read its wake-up any more
        self._run_callbacks()

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        """Jobs are cancelled through their own ``terminate`` (Celery calls both)."""

    def jobs_for_event(self, event_id: str) -> list[AsyncJob]:
        """Running jobs that belong to `event_id` (the event, its continuation, its tools)."""
        with self._lock:
            jobs = list(self.jobs.values())
        out = []
        for job in jobs:
            type_, task_id = job.args[0], job.args[1]
            if task_id == event_id:
                out.append(job)
            elif type_ == "agentflow.run_tool":
                request_dict: dict[str, Any] = job.args[2] or {}
                call_args: Any = request_dict.get("args") or ()
                if len(call_args) > 1 and call_args[1] == event_id:
                    out.append(job)
        return out

    def on_stop(self) -> None:
        """Warm shutdown: let running work finish (each is bounded by its time limit)."""
        self._drain_here()
        waiting = len(self.jobs)
        if waiting:
            log.info("warm shutdown: waiting for %d AgentFlow tasks", waiting)
        while not self._idle.wait(1.0):
            if self.terminating:
                break
        super().on_stop()

    def on_terminate(self) -> None:
        """Cold shutdown: cancel what runs; unacked, the messages go back to their queues."""
        self.terminating = True
        self._drain_here()
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel("shutdown")
        self._idle.wait(5.0)
        super().on_terminate()

    def _get_info(self) -> Any:
        info = super()._get_info()
        with self._lock:
            running = sum(1 for j in self.jobs.values() if j.started)
            total = len(self.jobs)
        info.update({"agentflow-running": running, "agentflow-waiting": total - running,
                     "event-loop-pid": os.getpid()})  # fmt: skip
        return info


def _results_in_script(app: Any) -> bool:
    from celery.backends.redis import RedisBackend

    from agentflow._redis.connection import get_redis
    from agentflow._redis.publish import same_redis

    backend = getattr(app, "backend", None)
    return isinstance(backend, RedisBackend) and same_redis(backend.client, get_redis())


def monotonic() -> float:
    """The clock Celery's ``on_accepted`` expects."""
    return time.monotonic()
