"""The backlog an autoscaler reads: queued plus taken and not yet acked, from a real worker."""

from __future__ import annotations

import json
import socket
import time

import pytest

from agentflow._redis.backlog import PRIORITY_SEP, backlog
from agentflow._redis.queues import TOOLS_QUEUE, agent_queue
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


def _gauges(sock: socket.socket, name: str, until: float, want: float) -> list[float]:
    """Values of the gauge `name` received until one equals `want` or time is up."""
    seen: list[float] = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            continue
        for line in data.decode().splitlines():
            if line.startswith(name + ":") and line.endswith("|g"):
                seen.append(float(line.split(":")[1].split("|")[0]))
        if want in seen:
            break
    return seen


def test_a_busy_queue_reads_its_whole_backlog(start_worker, client, redis_client) -> None:
    """One slot, six long events: the list holds only what the worker has not prefetched,
    the backlog (and its gauge) counts all six."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    start_worker(concurrency=1, env={
        "AGENTFLOW_MONITORING__ENABLE_METRICS": "true",
        "AGENTFLOW_MONITORING__STATSD_PORT": str(sock.getsockname()[1]),
        "AGENTFLOW_MONITORING__METRICS_INTERVAL": "200ms",
    })  # fmt: skip
    queue = agent_queue("slow_async")
    handles = client.emit_many(
        {"type": "t", "agent": "slow_async", "data": {"seconds": 60}} for _ in range(6)
    )
    try:
        deadline = time.monotonic() + 30
        while not any(redis_client.llen(f"{TEST_PREFIX}:test:started:{h.id}") for h in handles):
            assert time.monotonic() < deadline, "no event started"
            time.sleep(0.05)
        work = backlog(redis_client, [queue])[queue]
        assert work.total == 6
        assert work.held >= 2  # one running, at least one prefetched behind it
        assert redis_client.llen(queue) == work.queued < 6  # what LLEN alone would scale on
        seen = _gauges(sock, "agentflow.queue.backlog.slow_async", time.monotonic() + 10, 6)
        assert 6 in seen, seen
    finally:
        for h in handles:
            h.cancel()
        sock.close()


def test_held_records_are_counted_by_queue(redis_client) -> None:
    """Records in the fetch script's format and in kombu's own, priority lists, and a
    record that names no queue."""
    chat, tools = agent_queue("chat"), TOOLS_QUEUE
    redis_client.lpush(chat, "{}", "{}")
    redis_client.lpush(f"{chat}{PRIORITY_SEP}9", "{}")
    records = {
        "f.1": '[{"body": "x"},"",' + json.dumps(chat) + "]",  # fetch.lua
        "f.2": json.dumps([{"body": 'y ]"'}, "", chat]),  # kombu / the heartbeat
        "f.3": json.dumps([{"body": "z"}, tools, tools]),
        "f.4": "not a record",
    }
    for i in range(1200):  # more than one HSCAN step
        records[f"g.{i}"] = json.dumps([{"n": i}, "", tools])
    redis_client.hset("unacked", mapping=records)
    got = backlog(redis_client, [chat, tools, agent_queue("idle")])
    assert (got[chat].queued, got[chat].held) == (3, 2)
    assert (got[tools].queued, got[tools].held) == (0, 1201)
    assert got[agent_queue("idle")].total == 0
