"""The CLI fails in one clear line: bad flags are refused by click, Redis down is no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import cli_env

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", *args],
        capture_output=True, text=True, timeout=120, env=cli_env(**env),
    )  # fmt: skip


def _redis_down_env() -> dict[str, str]:
    return {
        "AGENTFLOW_BROKER__URL": f"redis://:hunter2-secret@127.0.0.1:{_closed_port()}/0",
        "AGENTFLOW_BROKER__EMBEDDED": "false",
    }


def test_emit_with_redis_down_prints_one_line_and_exits_1() -> None:
    env = _redis_down_env()
    done = _cli("emit", "--type", "t", "--agent", "echo", **env)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    # One error line, the last thing printed (a configuration warning may precede it).
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if "Error" in line] == lines[-1:], done.stderr
    masked = env["AGENTFLOW_BROKER__URL"].replace("hunter2-secret", "********")
    assert lines[-1].startswith(f"Error: cannot reach Redis at {masked}: "), lines[-1]
    assert "hunter2-secret" not in done.stdout + done.stderr


def test_emit_and_wait_with_redis_down_also_fails_cleanly() -> None:
    done = _cli("emit", "--type", "t", "--agent", "echo", "--wait", "--timeout", "5",
                **_redis_down_env())  # fmt: skip
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "cannot reach Redis" in done.stderr


def test_dlq_list_with_redis_down_fails_cleanly() -> None:
    done = _cli("dlq", "list", **_redis_down_env())
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "cannot reach Redis" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "-5"], "Invalid value for '--timeout': -5.0 is not in the range x>=0"),
        (["--timeout", "nan"], "Invalid value for '--timeout': 'nan' is not a finite number"),
        (["--timeout", "inf"], "Invalid value for '--timeout': 'inf' is not a finite number"),
        (["--timeout", "soon"], "Invalid value for '--timeout'"),
        (["--data", '{"x": NaN}'], "Invalid value for '--data': NaN is not valid JSON"),
        (["--data", '{"x": [Infinity]}'], "Invalid value for '--data': Infinity is not valid"),
        (["--metadata", '{"x": -Infinity}'], "Invalid value for '--metadata': -Infinity is not"),
        (["--metadata", '{"x": NaN}'], "Invalid value for '--metadata': NaN is not valid JSON"),
        (["--data", "[1, 2]"], "Invalid value for '--data': must be a JSON object, got list"),
        (["--data", "{oops"], "Invalid value for '--data': not valid JSON"),
    ],
)
def test_emit_refuses_bad_flags_with_exit_2(args: list[str], message: str) -> None:
    # Redis is down too: a refused flag is reported before anything connects.
    done = _cli("emit", "--type", "t", "--agent", "echo", *args, **_redis_down_env())
    assert done.returncode == 2, done
    assert message in done.stderr
    assert "Traceback" not in done.stderr
