"""One asyncio event loop per process, in a daemon thread, shared by every pool thread.

Task threads submit coroutines with :func:`run`; the loop holds the process's async clients
(httpx pools, async Redis) so hundreds of LLM calls share a few connections. The loop is
created lazily and again after fork, so prefork children each get their own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop, started on first use."""
    global _loop, _pid
    loop, pid = _loop, _pid
    if loop is not None and pid == os.getpid() and not loop.is_closed():
        return loop
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _serve() -> None:
                asyncio.set_event_loop(new_loop)
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            threading.Thread(target=_serve, name="agentflow-aio", daemon=True).start()
            ready.wait()
            _loop, _pid = new_loop, os.getpid()
        return _loop


def in_loop_thread() -> bool:
    """True when called from the background loop's own thread."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the process loop and wait for it; cancel it after `timeout` seconds."""
    if timeout is not None:
        coro = asyncio.wait_for(coro, timeout)
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    return future.result()


def stop() -> None:
    """Stop the loop (worker shutdown); later calls start a new one."""
    global _loop
    with _lock:
        loop, _loop = _loop, None
    if loop is not None and not loop.is_closed() and _pid == os.getpid():
        loop.call_soon_threadsafe(loop.stop)
