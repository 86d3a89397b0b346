"""`celery -A agentflow flower` binds loopback and needs credentials unless told otherwise."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ROOT, TEST_ENV
from tests.integration.redis_server import free_port

pytestmark = pytest.mark.integration

AUTH = ("ops", "s3cret-flower")


def _env(**extra: str) -> dict[str, str]:
    """The suite's environment without any FLOWER_* or opt-out variable of the caller's."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("FLOWER_") and k != "AGENTFLOW_FLOWER_UNAUTHENTICATED"}  # fmt: skip
    return {**base, **TEST_ENV, **extra}


def _command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "agentflow", "flower", f"--port={port}", *args]


@dataclass
class Flower:
    """A running Flower subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listening(self) -> set[str]:
        """The addresses Flower's process listens on for its port."""
        conns = psutil.Process(self.proc.pid).net_connections(kind="inet")
        return {c.laddr.ip for c in conns
                if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port}  # fmt: skip


@contextlib.contextmanager
def _flower(tmp_path: Path, *args: str, **env: str) -> Iterator[Flower]:
    port = free_port()
    log = tmp_path / f"flower-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_command(port, *args), env=_env(**env), stdout=out,
                                stderr=subprocess.STDOUT, cwd=str(ROOT))  # fmt: skip
    flower = Flower(proc, port, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"flower exited: {log.read_text(errors='replace')}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{flower.base}/healthcheck", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.25)
        yield flower
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _other_address() -> str | None:
    """A non-loopback IPv4 address of this host, if it has one."""
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return None


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except OSError:
        return True


def test_flower_without_credentials_refuses_to_start() -> None:
    port = free_port()
    done = subprocess.run(_command(port), env=_env(), capture_output=True, text=True,
                          timeout=120, cwd=str(ROOT))  # fmt: skip
    assert done.returncode == 1, done
    assert "without authentication" in done.stderr
    assert "FLOWER_BASIC_AUTH=user:password" in done.stderr
    assert "AGENTFLOW_FLOWER_UNAUTHENTICATED=1" in done.stderr
    assert "Traceback" not in done.stderr
    assert _refused("127.0.0.1", port)


@pytest.mark.parametrize("basic_auth", ["ops", ":pw", "ops:"])
def test_flower_refuses_malformed_basic_auth(basic_auth: str) -> None:
    done = subprocess.run(_command(free_port()), env=_env(FLOWER_BASIC_AUTH=basic_auth),
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT))  # fmt: skip
    assert done.returncode == 1, done
    assert "must be user:password" in done.stderr


def test_flower_with_basic_auth_listens_on_loopback_and_asks_for_it(tmp_path: Path) -> None:
    with _flower(tmp_path, FLOWER_BASIC_AUTH=":".join(AUTH)) as flower:
        assert flower.listening() == {"127.0.0.1"}
        other = _other_address()
        if other is not None:
            assert _refused(other, flower.port)
        assert httpx.get(f"{flower.base}/", timeout=30).status_code == 401
        assert httpx.get(f"{flower.base}/api/workers", timeout=30).status_code == 401
        assert httpx.get(f"{flower.base}/", auth=("ops", "wrong"), timeout=30).status_code == 401
        assert httpx.get(f"{flower.base}/", auth=AUTH, timeout=30).status_code == 200
        # Exempt by Flower's design (documented in docs/security.md).
        assert httpx.get(f"{flower.base}/healthcheck", timeout=30).status_code == 200


def test_flower_explicit_address_and_auth_flag_still_work(tmp_path: Path) -> None:
    with _flower(tmp_path, "--address=0.0.0.0", f"--basic-auth={':'.join(AUTH)}") as flower:
        assert flower.listening() == {"0.0.0.0"}
        assert httpx.get(f"{flower.base}/", timeout=30).status_code == 401
        assert httpx.get(f"{flower.base}/", auth=AUTH, timeout=30).status_code == 200


def test_flower_opt_out_serves_without_credentials_on_loopback(tmp_path: Path) -> None:
    with _flower(tmp_path, AGENTFLOW_FLOWER_UNAUTHENTICATED="1") as flower:
        assert flower.listening() == {"127.0.0.1"}
        assert httpx.get(f"{flower.base}/", timeout=30).status_code == 200
    assert "runs without authentication" in flower.log.read_text(errors="replace")
