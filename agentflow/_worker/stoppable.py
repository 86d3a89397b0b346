"""Sync agent and tool code run where a timeout or a cancel can stop it.

Python cannot kill a thread, but it can raise an exception in one: CPython's
``PyThreadState_SetAsyncExc`` makes the thread raise :class:`Stopped` at its next bytecode.
That stops code that computes (a loop spinning at 100 % CPU stops at once) and code that
waits in a C call (``time.sleep``, a blocking read) as soon as the call returns.

- :class:`StoppableThreads` runs blocking sync calls on daemon threads. A call whose time is
  up (or whose event was cancelled) is stopped and *abandoned*: its caller gets
  ``TimeoutError`` (or ``CancelledError``) at once, and a fresh thread takes the next call,
  so healthy work never queues behind stuck threads. Daemon threads never hold up the
  process at exit (``concurrent.futures`` threads are joined at exit: a stuck one made
  SIGTERM hang). When more than ``max_abandoned`` abandoned threads are still stuck (they
  wait in C calls that never return), ``on_too_many`` is called once: the worker then
  restarts itself gracefully (see :mod:`agentflow._worker.recycle`).
- :func:`guarded` runs a short sync call on the event loop's own thread with a watchdog
  that stops it at its deadline (agents registered with ``blocking=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("agentflow.stoppable")


class Stopped(BaseException):
    """Raised inside sync agent or tool code whose time ran out or whose event was
    cancelled. A BaseException, so that ``except Exception`` in user code does not swallow
    it."""


def _inject(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(exc) if exc else None)  # fmt: skip


class _Call:
    """One sync call handed to a thread; `lock` orders finishing against stopping."""

    __slots__ = ("abandoned", "args", "context", "done", "fn", "future", "ident", "lock",
                 "loop", "stopping")  # fmt: skip

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:  # fmt: skip
        self.fn = fn
        self.args = args
        self.loop = loop
        self.future = future
        self.context = contextvars.copy_context()
        self.lock = threading.Lock()
        self.done = False
        self.abandoned = False
        self.stopping = False
        self.ident: int | None = None


class StoppableThreads:
    """A growing set of daemon threads for blocking sync calls that can be stopped."""

    def __init__(self, name: str, *, max_abandoned: int = 16,
                 on_too_many: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.name = name
        self.max_abandoned = max_abandoned
        self.on_too_many = on_too_many
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._stuck: set[int] = set()
        self._told = False

    @property
    def stuck(self) -> int:
        """Abandoned threads that have not come back yet."""
        return len(self._stuck)

    async def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None,
                  on_cancel: Callable[[], None] | None = None) -> Any:  # fmt: skip
        """``fn(*args)`` on a thread, stopped and abandoned after `timeout` seconds.

        When the awaiting task is cancelled, `on_cancel` tells the code (it should stop at
        its next check of its run context); code that never checks is stopped when its time
        limit comes, as if it had timed out.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(fn, args, loop, future)
        deadline = loop.time() + timeout if timeout is not None else None
        self._submit(call)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._stop(call)
            raise
        except asyncio.CancelledError:
            call.abandoned = True
            if on_cancel is not None:
                on_cancel()
            if deadline is None:
                self._stop(call)
            else:
                loop.call_at(deadline, self._stop, call)
            raise

    def _submit(self, call: _Call) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._queue.put(call)
        if spawn:
            threading.Thread(target=self._serve, name=f"agentflow-{self.name}",
                             daemon=True).start()  # fmt: skip

    def _serve(self) -> None:
        ident = threading.get_ident()
        while True:
            call = self._queue.get()
            if call is None:
                return
            # A stop raised after the call gave up its thread: nothing left to undo.
            with contextlib.suppress(Stopped):
                self._run_one(call, ident)
            with self._lock:
                self._stuck.discard(ident)
                self._idle += 1

    def _run_one(self, call: _Call, ident: int) -> None:
        call.ident = ident
        error: BaseException | None = None
        value: Any = None
        try:
            if not call.abandoned:
                value = call.context.run(call.fn, *call.args)
        except Stopped:
            error = None
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        finally:
            with call.lock:
                call.done = True
                if call.stopping:
                    _inject(ident, None)  # clear a stop that was not raised yet
        if call.abandoned:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            call.loop.call_soon_threadsafe(_settle, call.future, value, error)

    def _stop(self, call: _Call) -> None:
        with call.lock:
            if call.done:
                return
            call.abandoned = True
            if call.ident is None:
                return  # not started: the thread skips it
            with self._lock:
                self._stuck.add(call.ident)
                stuck = len(self._stuck)
            call.stopping = True
            _inject(call.ident, Stopped)
        if stuck > self.max_abandoned and not self._told and self.on_too_many is not None:
            self._told = True
            self.on_too_many(stuck)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class _Watch:
    __slots__ = ("deadline", "done", "ident", "lock", "stopped")

    def __init__(self, ident: int, deadline: float) -> None:
        self.ident = ident
        self.deadline = deadline
        self.lock = threading.Lock()
        self.done = False
        self.stopped = False


class _Watchdog:
    """One thread that stops guarded calls running past their deadline."""

    def __init__(self) -> None:
        self._watches: set[_Watch] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._lock:
            if not self._watches:
                self._wake.set()  # the watchdog sleeps while nothing is watched
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="agentflow-watchdog",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def discard(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _serve(self) -> None:
        while True:
            with self._lock:
                if not self._watches:
                    self._wake.clear()
            if not self._wake.is_set():
                self._wake.wait()  # nothing is watched: sleep until something is
            time.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                due = [w for w in self._watches if w.deadline <= now]
            for w in due:
                with w.lock:
                    if not w.done and not w.stopped:
                        w.stopped = True
                        _inject(w.ident, Stopped)
                        log.error("a blocking=False agent ran past its time limit on the event "
                                  "loop; stopped it (give agents that block blocking=True)")  # fmt: skip


_watchdog = _Watchdog()


def guarded(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    """``fn(*args)`` on this thread, stopped with :class:`Stopped` after `timeout` seconds
    (raised here as ``TimeoutError``)."""
    if timeout is None:
        return fn(*args)
    watch = _Watch(threading.get_ident(), time.monotonic() + timeout)
    _watchdog.add(watch)
    try:
        return fn(*args)
    except Stopped:
        raise TimeoutError(timeout) from None
    finally:
        with watch.lock:
            watch.done = True
            if watch.stopped:
                _inject(watch.ident, None)
        _watchdog.discard(watch)
        if watch.stopped:
            raise TimeoutError(timeout)
