"""A private `redis-server` for one test: its own temporary directory and free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from agentflow._redis.embedded import redis_server_binary


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(directory: Path, *args: str, timeout: float = 30.0) -> Iterator[int]:
    """Run ``redis-server`` with `args` in `directory` on a free port; yields the port.

    The server is stopped (and killed if it hangs) when the block ends.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
           "--dir", str(directory), "--save", "", "--logfile", str(log), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')}")
            probe = redis.Redis(port=port, socket_timeout=1)
            try:
                probe.ping()
                break
            except (redis.RedisError, OSError):
                pass
            finally:
                probe.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer on {port}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
