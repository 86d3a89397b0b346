"""Run the mock LLM: in a thread (tests), in a child process (demo, benchmark), or as the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from agentflow.mock_llm.app import MockOptions, create_app


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit toward `wanted` (keep-alive connections need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, backlog=8192,
        timeout_keep_alive=120, limit_concurrency=None, lifespan="off",
    )  # fmt: skip


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _run_server(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on `sock` on uvicorn's preferred loop (uvloop when installed)."""
    factory = server.config.get_loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    try:
        loop.run_until_complete(server.serve(sockets=[sock]))
    finally:
        loop.close()


@dataclass
class MockServer:
    """A running mock LLM: its URL and how to stop it."""

    url: str
    port: int
    options: MockOptions | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _process: subprocess.Popen[bytes] | None = None

    def stats(self) -> dict[str, int]:
        """The server's request counters."""
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())

    def reset_stats(self) -> None:
        """Zero the request counters."""
        httpx.post(f"{self.url}/stats/reset", timeout=5)

    def stop(self) -> None:
        """Stop the server and wait for it."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


def serve_in_thread(port: int = 0, host: str = "127.0.0.1", **options: Any) -> MockServer:
    """Start the server on a background thread of this process; returns once it answers."""
    opts = MockOptions(**options)
    sock = _bound_socket(host, port)
    actual = sock.getsockname()[1]
    server = uvicorn.Server(_config(create_app(opts), host, actual))

    def _run() -> None:
        _run_server(server, sock)

    thread = threading.Thread(target=_run, name="mock-llm", daemon=True)
    thread.start()
    handle = MockServer(f"http://{host}:{actual}", actual, opts, server, thread)
    _wait_healthy(handle.url, lambda: thread.is_alive())
    return handle


def start_mock_llm_process(
    port: int = 0, latency: str | float = "50ms", host: str = "127.0.0.1", **options: Any
) -> MockServer:
    """Start `agentflow mock-llm` as a child process (its own core); returns once it answers."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    args = [sys.executable, "-m", "agentflow.cli", "mock-llm", "--host", host,
            "--port", str(port), "--latency", str(latency)]  # fmt: skip
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=os.environ.copy())  # fmt: skip
    handle = MockServer(f"http://{host}:{port}", port, _process=proc)
    try:
        _wait_healthy(handle.url, lambda: proc.poll() is None)
    except RuntimeError:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        handle.stop()
        raise RuntimeError(f"mock LLM did not start: {err[-2000:]}") from None
    return handle


def _wait_healthy(url: str, alive: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("mock LLM exited")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"mock LLM not healthy at {url} after {timeout}s")


def serve_forever(host: str, port: int, workers: int = 1, **options: Any) -> None:
    """Serve in the foreground (the CLI); `workers` > 1 forks processes sharing one socket."""
    raise_fd_limit()
    sock = _bound_socket(host, port)
    children: list[int] = []
    for _ in range(max(0, workers - 1)):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)
    server = uvicorn.Server(_config(create_app(MockOptions(**options)), host, port))
    try:
        _run_server(server, sock)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
