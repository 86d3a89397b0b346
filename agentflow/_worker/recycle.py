"""A worker that restarts itself gracefully: Celery's own SIGHUP restart, started from code.

Used when timed-out sync agents leave too many threads stuck in blocking calls (they cannot
be killed, only abandoned): the worker stops taking messages, lets what runs finish (a warm
shutdown, as for SIGTERM), and then replaces itself with a fresh process running the same
command (``os.execv``, as Celery's SIGHUP handler does). Its pid stays the same, so process
supervisors and Kubernetes see a worker that kept running.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

log = logging.getLogger("agentflow.worker")
_lock = threading.Lock()
_started = False


def _exec_again() -> None:
    from celery.platforms import close_open_fds

    close_open_fds([sys.__stdin__, sys.__stdout__, sys.__stderr__])
    # The command line as given (``python -m celery ...`` included), as Celery's SIGHUP
    # restart would run it.
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def recycle(reason: str) -> None:
    """Restart this worker once what it runs has finished (at most once per process)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    from celery.worker import state

    log.error("worker restarting itself: %s", reason)
    atexit.register(_exec_again)
    state.should_stop = 0
