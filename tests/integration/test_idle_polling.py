"""What an idle worker costs Redis, and that it still takes every message.

An idle worker waits on its queues' doorbells; each wait that runs out with nothing to take
doubles the next one, up to ``fetch_idle_max`` (2 s), so it asks Redis every two seconds,
not five times a second (docs/deploy.md, "What one Redis carries"). A producer that rings no
doorbell (plain Celery with kombu's own transport) still has its message taken.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from tests.integration.redis_server import private_redis

pytestmark = pytest.mark.integration


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_an_idle_worker_waits_longer_and_still_takes_an_unrung_message(
    tmp_path: Path, start_worker: Any
) -> None:
    with private_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis(port=port)
        start_worker(concurrency=2, env={"AGENTFLOW_BROKER__URL": url})
        time.sleep(5)  # 0.2 + 0.4 + 0.8 + 1.6 s of empty waits: at the longest wait now
        before = _calls(probe, "brpop"), _calls(probe, "evalsha")
        time.sleep(10)
        waits = _calls(probe, "brpop") - before[0]
        scripts = _calls(probe, "evalsha") - before[1]
        # At 0.2 s per wait, ten seconds held 40-50 waits and as many fetches; at 2 s, 5.
        assert waits <= 8, f"{waits} doorbell waits in 10 s"
        assert scripts <= 30, f"{scripts} scripts in 10 s (fetches + the scheduler's 1/s)"

        plain = Celery("plain", broker=url, backend=url, set_as_current=False)  # kombu's own
        result = plain.send_task("agentflow.run_event", queue="agentflow.agent.echo",
                                 args=[{"type": "t", "agent": "echo", "data": {"x": 1}}])  # fmt: skip
        assert probe.llen("agentflow.wake:agentflow.agent.echo") == 0  # nothing rang
        assert result.get(timeout=15)["output"]["echo"] == {"x": 1}
