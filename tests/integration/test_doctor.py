"""`agentflow doctor` says what is unsafe about the Redis AgentFlow uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import cli_env
from tests.integration.redis_server import private_redis

pytestmark = pytest.mark.integration

PREFIX = "doctortest"


def _doctor(port: int, *args: str, user: str = "") -> subprocess.CompletedProcess[str]:
    env = cli_env(AGENTFLOW_BROKER__URL=f"redis://{user}127.0.0.1:{port}/0",
                  AGENTFLOW_BROKER__KEY_PREFIX=PREFIX, AGENTFLOW_BROKER__EMBEDDED="false")  # fmt: skip
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "doctor", *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def _lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check name → its whole line."""
    return {line.split()[1]: line for line in done.stdout.splitlines() if line.strip()}


def test_doctor_fails_on_eviction_and_warns_on_no_aof(tmp_path: Path) -> None:
    with private_redis(tmp_path, "--maxmemory-policy", "allkeys-lru", "--appendonly", "no",
                       "--maxmemory", "512mb") as port:  # fmt: skip
        done = _doctor(port)
    assert done.returncode == 1, done
    lines = _lines(done)
    assert lines["reachable"].startswith("OK"), done.stdout
    assert lines["maxmemory-policy"].startswith("FAIL"), done.stdout
    assert "allkeys-lru" in lines["maxmemory-policy"]
    assert "evict" in lines["maxmemory-policy"]
    assert lines["appendonly"].startswith("WARN"), done.stdout
    assert "restart loses queued events" in lines["appendonly"]
    assert lines["memory"].startswith("OK") and "of maxmemory 512.0 MiB" in lines["memory"]
    assert lines["global_keyprefix"].startswith("OK"), done.stdout
    assert lines["epoch"].startswith("WARN") and "no AgentFlow worker" in lines["epoch"]
    assert "Traceback" not in done.stderr


def test_doctor_passes_a_safe_redis(tmp_path: Path) -> None:
    with private_redis(tmp_path, "--maxmemory-policy", "noeviction", "--appendonly", "yes") as port:
        redis.Redis(port=port).set(f"{PREFIX}:epoch", "e1")
        done = _doctor(port)
        as_json = _doctor(port, "--json")
    assert done.returncode == 0, done
    assert not [line for line in done.stdout.splitlines() if line.startswith("FAIL")], done.stdout
    lines = _lines(done)
    assert lines["appendonly"].startswith("OK"), done.stdout
    assert lines["maxmemory-policy"].startswith("OK"), done.stdout
    assert "no limit" in lines["memory"], done.stdout
    assert lines["epoch"].startswith("OK") and "e1" in lines["epoch"]
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] is True
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {"reachable": "OK", "appendonly": "OK", "maxmemory-policy": "OK",
                        "memory": "OK", "epoch": "OK", "global_keyprefix": "OK"}  # fmt: skip


def _add_user(port: int, name: str, *denied: str) -> str:
    """A user who may run everything but `denied` (as on a managed Redis); its URL part."""
    redis.Redis(port=port).acl_setuser(name, enabled=True, passwords=["+pw"], keys=["*"],
                                       channels=["*"], commands=["+@all", *denied])  # fmt: skip
    return f"{name}:pw@"


def test_doctor_falls_back_to_info_when_config_is_refused(tmp_path: Path) -> None:
    with private_redis(
        tmp_path, "--maxmemory-policy", "volatile-lru", "--appendonly", "no"
    ) as port:
        no_config = _doctor(port, user=_add_user(port, "managed", "-config"))
        no_info = _doctor(port, user=_add_user(port, "locked", "-config", "-info"))
    assert no_config.returncode == 1, no_config
    lines = _lines(no_config)
    policy = lines["maxmemory-policy"]
    assert policy.startswith("FAIL") and "volatile-lru" in policy and "CONFIG refused" in policy
    assert lines["appendonly"].startswith("WARN") and "CONFIG refused" in lines["appendonly"]
    assert ":pw@" not in no_config.stdout and "managed:********@" in no_config.stdout
    # Neither CONFIG nor INFO: the doctor says what it could not check (and fails nothing).
    assert no_info.returncode == 0, no_info
    limited = _lines(no_info)
    for name in ("appendonly", "maxmemory-policy", "memory"):
        assert limited[name].startswith("WARN") and "could not be checked" in limited[name]


def test_doctor_with_redis_down_fails_in_one_line(tmp_path: Path) -> None:
    with private_redis(tmp_path) as port:
        pass  # stopped again: nothing listens on `port` any more
    done = _doctor(port)
    assert done.returncode == 1, done
    assert _lines(done)["reachable"].startswith("FAIL")
    assert "cannot reach Redis" in done.stdout
    assert "Traceback" not in done.stderr
