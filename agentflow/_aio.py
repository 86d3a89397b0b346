"""One asyncio event loop per process, in a daemon thread, shared by every pool thread.

Task threads submit coroutines with :func:`run`; the loop holds the process's async clients
(httpx pools, async Redis) so hundreds of LLM calls share a few connections. The loop is
created lazily and again after fork, so prefork children each get their own.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sniffio

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _green_threads() -> bool:
    """Whether gevent or eventlet has patched threading: the loop's thread is then a
    greenlet, and uvloop (blocking inside libuv) would stall the whole process; asyncio's
    selector is patched to yield."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def new_loop(kind: str | None = None) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind` (``[performance] event_loop`` when None): ``uvloop``,
    ``asyncio``, or ``auto`` — uvloop when it is installed and threads are not green."""
    if kind is None:
        from agentflow.config import get_settings

        kind = get_settings().performance.event_loop
    if kind == "uvloop" or (kind == "auto" and not _green_threads()):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                from agentflow.errors import ConfigError

                raise ConfigError(
                    "[performance] event_loop = uvloop, but uvloop is not installed"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: it starts its own loop."""
    global _loop, _inbox, _lock
    _loop, _inbox, _lock = None, None, threading.Lock()


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop, started on first use (again in a forked
    child)."""
    global _loop
    loop = _loop
    if loop is not None and not loop.is_closed():
        return loop
    with _lock:
        if _loop is None or _loop.is_closed():
            created = new_loop()
            ready = threading.Event()

            def _serve() -> None:
                asyncio.set_event_loop(created)
                # This thread only ever runs asyncio: say so, instead of letting httpcore's
                # and anyio's sniffio calls find out from asyncio.current_task() each time.
                sniffio.thread_local.name = "asyncio"
                created.call_soon(ready.set)
                created.run_forever()

            threading.Thread(target=_serve, name="agentflow-aio", daemon=True).start()
            ready.wait()
            _loop = created
        return _loop


class _Inbox:
    """Coroutines handed to the loop from other threads, started in batches.

    ``run_coroutine_threadsafe`` wakes the loop (a write to its self-pipe) and builds a
    ``concurrent.futures.Future`` for every coroutine; a consumer that delivers messages
    in bursts needs neither: one wake-up starts every coroutine queued so far.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[Coroutine[Any, Any, Any]] = collections.deque()
        self.lock = threading.Lock()
        self.scheduled = False
        self.running: set[asyncio.Task[Any]] = set()

    def put(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.queue.append(coro)
        with self.lock:
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except BaseException:
            with self.lock:
                self.scheduled = False
            raise

    def drain(self) -> None:
        with self.lock:
            self.scheduled = False  # what arrives from now on schedules another drain
        queue, running = self.queue, self.running
        while queue:
            task = self.loop.create_task(queue.popleft())
            running.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(running.discard)


_inbox: _Inbox | None = None
os.register_at_fork(after_in_child=_forget_in_child)


def submit(coro: Coroutine[Any, Any, Any]) -> None:
    """Start `coro` on the process loop and return at once (fire and forget: the coroutine
    handles its own errors). Coroutines submitted while the loop is busy start together."""
    global _inbox
    loop = get_loop()
    inbox = _inbox
    if inbox is None or inbox.loop is not loop:
        with _lock:
            if _inbox is None or _inbox.loop is not loop:
                _inbox = _Inbox(loop)
            inbox = _inbox
    inbox.put(coro)


def per_process(cache: dict[tuple[int, str], T], name: str, make: Callable[[], T]) -> T:
    """`cache`'s object called `name` for this process, made by `make` on first use — and
    again in a forked child, which must not share its parent's threads or connections."""
    key = (os.getpid(), name)
    value = cache.get(key)
    if value is None:
        with _lock:
            value = cache.get(key)
            if value is None:
                value = cache[key] = make()
    return value


_executors: dict[tuple[int, str], ThreadPoolExecutor] = {}


def executor(name: str, max_workers: int) -> ThreadPoolExecutor:
    """The process's pool of helper threads called `name`, for blocking work started from
    the loop (sync tools, Celery result-backend calls)."""
    return per_process(_executors, name, lambda: ThreadPoolExecutor(
        max_workers=max_workers, thread_name_prefix=f"agentflow-{name}"))  # fmt: skip


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the process loop and wait for it; cancel it after `timeout` seconds."""
    if timeout is not None:
        coro = asyncio.wait_for(coro, timeout)
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return future.result()
    except BaseException:
        # The caller gave up (a pool's time limit, an interrupt): so does the coroutine.
        future.cancel()
        raise


def started_loop() -> asyncio.AbstractEventLoop | None:
    """The process's loop if it has been started and is not stopped, else None (without
    starting one, as :func:`get_loop` would)."""
    loop = _loop
    return loop if loop is not None and loop.is_running() else None


def can_wait_on_loop() -> bool:
    """Whether the caller may block on :func:`run`: not on the process loop's own thread
    (it would wait for ever for the loop it blocks), and not under gevent or eventlet (the
    loop's thread would be a green one, stalled by any blocking call)."""
    if _green_threads():
        return False
    loop = _loop
    if loop is None:
        return True
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:
        return True


def stop() -> None:
    """Stop the loop (worker shutdown); later calls start a new one."""
    global _loop
    with _lock:
        loop, _loop = _loop, None
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
