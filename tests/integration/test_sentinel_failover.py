"""Redis failover through Sentinel: one primary, one replica, three sentinels on loopback
(scripts/sentinel_cluster.py), with workers and a producer on a ``sentinel://`` URL.

- The primary SIGKILLed in the middle of a steady load, with ``[broker] wait_replicas = 1``:
  workers and the producer follow the promoted replica by themselves; every event completes,
  none is lost, no session's delta is applied twice, and events run again within seconds.
  The dead node, started again, rejoins as a replica.
- With no replica to wait for, one emit pays ``wait_timeout``; the next ones skip the WAIT.
- After the failover, a new producer process on the same URL gets results, a failing
  event's dead letter, and a streaming agent's tokens and fanned-out tool calls: everything
  AgentFlow keeps in Redis is on the new primary.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.sentinel_cluster import SentinelCluster, failover_under_load

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

_AFTER = """
import json
from agentflow import Client, EventFailed
from agentflow._redis.connection import get_redis
from agentflow.config import get_settings
from agentflow.dlq import DeadLetterQueue

client = Client()
out = {}
out["echo"] = client.emit({"type": "t", "agent": "stint", "data": {"seconds": 0}}).result(30).output
try:
    client.emit({"type": "t", "agent": "boom", "data": {"why": "after failover"}}).result(30)
except EventFailed as exc:
    out["failed"] = str(exc)
dlq = DeadLetterQueue(get_redis(), get_settings().broker.key_prefix)
out["dead_letters"] = [d.reason for d in dlq.list()]
handle = client.emit({"type": "t", "agent": "narrator", "data": {"tools": 3, "intro": "a b c"}})
out["stream"] = [i if isinstance(i, str) else i.get("type") for i in handle.stream(timeout=30)]
out["narrator"] = handle.result(30).output
client.close()
print(json.dumps(out))
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary, a replica and three sentinels; workers wait for one replica's WAIT."""
    with SentinelCluster(tmp_path / "sentinel", key_prefix="afsentinel",
                         env={"AGENTFLOW_BROKER__WAIT_REPLICAS": "1"}) as c:  # fmt: skip
        yield c


def test_primary_killed_under_load_loses_nothing(cluster: SentinelCluster) -> None:
    result = failover_under_load(cluster, events=1500, rate=150.0, kill_after=4.0)
    print(result.line())
    assert result.errors == {}
    assert (result.sent, result.completed, result.lost, result.duplicated) == (1500, 1500, 0, 0)
    assert result.promoted_after < 15, result.line()
    assert result.rejoined_after is not None, "the restarted old primary did not rejoin"
    # Workers retry their broker connection after 0.5 s, then 1, 1.5, ... s: the promoted
    # replica serves events within a few seconds of its promotion.
    assert result.recovered_after < result.promoted_after + 10, result.line()

    after = subprocess.run([sys.executable, "-c", _AFTER], env=cluster.agentflow_env("after"),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert after.returncode == 0, after.stderr[-3000:]
    out = json.loads(after.stdout.strip().splitlines()[-1])
    assert out["echo"]["host"] in ("w1", "w2")
    assert "boom: after failover" in out["failed"]
    assert any("boom: after failover" in reason for reason in out["dead_letters"])
    assert out["stream"][:3] == ["a ", "b ", "c "]
    assert out["stream"].count("tool_call") == 3 and out["stream"].count("tool_result") == 3
    assert out["narrator"]


@pytest.mark.parametrize("producer", ["Client", "AsyncClient"])
def test_a_missing_replica_costs_one_wait_then_emits_go_on(tmp_path: Path, producer: str) -> None:
    """wait_replicas = 1 on a Redis with no replica: the first emit waits wait_timeout and is
    counted unconfirmed; the next ones skip the WAIT for a while instead of each waiting."""
    import redis
    from celery import Celery

    from agentflow import AsyncClient, Client, load_settings
    from tests.conftest import TEST_PREFIX
    from tests.integration.redis_server import private_redis

    with private_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        redis.Redis(port=port).hset(f"{TEST_PREFIX}:agents", "echo", 1)  # as a worker announces
        app = Celery("producer", broker=url, backend=url, set_as_current=False)
        app.conf.broker_transport = "agentflow._redis.transport:Transport"
        settings = load_settings(broker={"url": url, "key_prefix": TEST_PREFIX,
                                         "wait_replicas": 1, "wait_timeout": "0.2s"})  # fmt: skip
        probe = redis.Redis(port=port)
        if producer == "Client":
            client = Client(app=app, settings=settings)
            try:
                handles = [client.emit({"type": "t", "agent": "echo", "data": {"n": 0}})]
                first = probe.info("commandstats")["cmdstat_wait"]["calls"]
                handles += [client.emit({"type": "t", "agent": "echo", "data": {"n": n}})
                            for n in range(1, 20)]  # fmt: skip
            finally:
                client.close()
        else:  # AsyncClient: 10 emits in one write with one WAIT, then 10 one by one

            async def emit_all() -> tuple[list[Any], int]:
                async with AsyncClient(app=app, settings=settings) as aclient:
                    sent = list(await asyncio.gather(*(
                        aclient.emit({"type": "t", "agent": "echo", "data": {"n": n}})
                        for n in range(10))))  # fmt: skip
                    waits = probe.info("commandstats")["cmdstat_wait"]["calls"]
                    for n in range(10, 20):
                        sent.append(await aclient.emit({"type": "t", "agent": "echo",
                                                        "data": {"n": n}}))  # fmt: skip
                    return sent, waits

            handles, first = asyncio.run(emit_all())
            assert first == 1  # one WAIT for the ten emits written together
        assert first >= 1  # the first emit waited (and found no replica)
        assert probe.info("commandstats")["cmdstat_wait"]["calls"] == first
        assert len({h.id for h in handles}) == 20
        assert probe.llen("agentflow.agent.echo") == 20
