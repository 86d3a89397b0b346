"""A profiling endpoint in each worker process (`[monitoring] enable_profiling`).

Plain HTTP on loopback (stacks and heap contents may reveal data: it never binds elsewhere):

- ``GET /debug/stacks`` — the current stack of every thread, as text.
- ``GET /debug/profile?seconds=N&hz=H&idle=0|1`` — a sampling CPU profile of all threads for
  N seconds (default 10, at H samples/s, default 100) in *collapsed stack* format
  (``thread;frame;frame count``), which speedscope, flamegraph.pl and inferno open. With
  ``idle=0`` (the default) samples of threads blocked in a known wait (locks, queues,
  selectors, sockets) are left out, so the profile shows where work happens.
- ``GET /debug/heap?limit=N`` — the top allocations by line (tracemalloc) and the traced total;
  ``/debug/heap/start`` starts tracing (it costs speed, so it is off until asked for) and
  ``/debug/heap/stop`` stops it.

The main worker process serves on `profile_port` (0, or a port already taken by another
worker on the host, means a free port is picked); prefork pool children each pick a free
port. Every endpoint is logged and registered in the Redis hash ``<prefix>:profilers``
(worker id → URL), where `agentflow benchmark --profile` finds them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import sys
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlparse

from celery import signals

log = logging.getLogger("agentflow.profiling")

HOST = "127.0.0.1"
MAX_SECONDS = 600.0
_IDLE = re.compile(
    r"^(wait|acquire|_wait_for_tstate_lock|join|get|select|poll|epoll|_poll|sleep|recv|recv_into|"
    r"accept|readinto|read_from_socket|_read_from_socket|run_forever|_run_once|serve_forever|"
    r"_worker|_recv|read_response|handle_request|_serve)$"
)
"""Innermost frames of a thread that waits; ``_serve`` is the event loop's thread inside
uvloop's compiled loop (polling)."""


# -- collecting ----------------------------------------------------------------------------
def _label(frame: FrameType) -> str:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return f"{name} ({_short(code.co_filename)}:{frame.f_lineno})"


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/agentflow/"):
        i = path.rfind(marker)
        if i >= 0:
            rest = path[i + len(marker) :]
            return ("agentflow/" + rest) if marker == "/agentflow/" else rest.split("/", 1)[-1]
    return path


def _stack(frame: FrameType | None) -> list[FrameType]:
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def thread_stacks() -> str:
    """Every thread's current stack, innermost call last (like a traceback)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out: list[str] = [f"pid {os.getpid()}, {len(names)} threads, {time.strftime('%H:%M:%S')}"]
    for ident, frame in sys._current_frames().items():
        out.append(f"\n--- thread {names.get(ident, '?')} ({ident}) ---")
        out.append("".join(traceback.format_stack(frame)).rstrip())
    return "\n".join(out) + "\n"


def sample_profile(seconds: float, hz: float = 100.0, idle: bool = False) -> str:
    """Sample all threads for `seconds`; return collapsed stacks (root first) with counts."""
    me = threading.get_ident()
    interval = 1.0 / max(1.0, min(hz, 1000.0))
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + min(seconds, MAX_SECONDS)
    while time.monotonic() < deadline:
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            frames = _stack(frame)
            if not frames:
                continue
            if not idle and _IDLE.match(frames[-1].f_code.co_name):
                continue
            thread = re.sub(r"[-_]?\d+$", "", names.get(ident, "thread")) or "thread"
            counts[";".join([thread.replace(";", "_"), *(_label(f) for f in frames)])] += 1
        time.sleep(interval)
    return "".join(f"{stack} {n}\n" for stack, n in counts.most_common())


def heap_top(limit: int = 30) -> str:
    """The lines that hold the most traced memory, and the traced total and peak."""
    if not tracemalloc.is_tracing():
        return "tracemalloc is not tracing: GET /debug/heap/start first\n"
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced: {current / 1e6:.1f} MB now, {peak / 1e6:.1f} MB peak; top {limit} by line"]
    for stat in snapshot.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 1024:10.1f} KiB {stat.count:8d} blocks  "
                     f"{_short(frame.filename)}:{frame.lineno}")  # fmt: skip
    return "\n".join(lines) + "\n"


# -- serving -------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server_version = "agentflow-profiling/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("profiling %s", format % args)

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/debug", "/debug/"):
                self._send(200, "/debug/stacks\n/debug/profile?seconds=10&hz=100&idle=0\n"
                                "/debug/heap?limit=30\n/debug/heap/start\n/debug/heap/stop\n")  # fmt: skip
            elif url.path == "/debug/stacks":
                self._send(200, thread_stacks())
            elif url.path == "/debug/profile":
                seconds = float(query.get("seconds", 10))
                if not 0 < seconds <= MAX_SECONDS:
                    self._send(400, f"seconds must be in (0, {MAX_SECONDS:g}]\n")
                    return
                body = sample_profile(seconds, float(query.get("hz", 100)),
                                      idle=query.get("idle", "0") not in ("0", "false"))  # fmt: skip
                self._send(200, body)
            elif url.path == "/debug/heap/start":
                if not tracemalloc.is_tracing():
                    tracemalloc.start(int(query.get("frames", 1)))
                self._send(200, "tracing\n")
            elif url.path == "/debug/heap/stop":
                tracemalloc.stop()
                self._send(200, "stopped\n")
            elif url.path == "/debug/heap":
                status = 200 if tracemalloc.is_tracing() else 409
                self._send(status, heap_top(int(query.get("limit", 30))))
            else:
                self._send(404, "not found; see /\n")
        except ValueError as exc:
            self._send(400, f"bad parameter: {exc}\n")


class ProfilingServer:
    """The endpoint of one process: an HTTP server in a daemon thread."""

    def __init__(self, port: int = 0, host: str = HOST) -> None:
        try:
            self.httpd = ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                raise
            log.warning("profile_port %d is taken (another worker?); picking a free port", port)
            self.httpd = ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="agentflow-profiling")  # fmt: skip

    def start(self) -> ProfilingServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


_server: ProfilingServer | None = None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _registry_key() -> str:
    from agentflow.config import get_settings

    return f"{get_settings().broker.key_prefix}:profilers"


def start(port: int) -> ProfilingServer:
    """Start this process's endpoint (once), log it and register it in Redis."""
    global _server
    if _server is not None:
        return _server
    _server = ProfilingServer(port).start()
    log.warning("profiling endpoint of pid %d: %s/debug/", os.getpid(), _server.url)
    try:
        from agentflow._redis.connection import get_redis

        get_redis().hset(_registry_key(), _worker_id(), _server.url)
    except Exception as exc:
        log.warning("could not register the profiling endpoint: %s", exc)
    return _server


def stop() -> None:
    """Stop this process's endpoint and unregister it."""
    global _server
    if _server is None:
        return
    server, _server = _server, None
    server.stop()
    with contextlib.suppress(Exception):
        from agentflow._redis.connection import get_redis

        get_redis().hdel(_registry_key(), _worker_id())


def _enabled() -> tuple[bool, int]:
    from agentflow.config import get_settings

    m = get_settings().monitoring
    return m.enable_profiling, m.profile_port


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    enabled, port = _enabled()
    if enabled:
        start(port)


@signals.worker_process_init.connect
def _on_child_init(**_: Any) -> None:
    global _server
    _server = None  # inherited from the parent's memory, not ours
    enabled, _port = _enabled()
    if enabled:
        start(0)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    stop()
