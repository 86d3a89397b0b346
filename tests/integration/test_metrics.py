"""statsd metrics from a real worker, received by a real UDP listener."""

from __future__ import annotations

import socket
import time

import pytest

from agentflow import Client

pytestmark = pytest.mark.integration


def _collect(sock: socket.socket, until: float) -> list[str]:
    lines: list[str] = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            continue
        lines += data.decode().splitlines()
    return lines


def test_worker_emits_event_metrics_over_statsd(start_worker, redis_client) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    start_worker(env={
        "AGENTFLOW_MONITORING__ENABLE_METRICS": "true",
        "AGENTFLOW_MONITORING__STATSD_PORT": str(port),
        "AGENTFLOW_MONITORING__METRICS_INTERVAL": "200ms",
    })  # fmt: skip
    client = Client()
    try:
        handles = client.emit_many({"type": "m", "agent": "echo"} for _ in range(5))
        for h in handles:
            h.result(timeout=30)
        failing = client.emit({"type": "m", "agent": "boom"})
        with pytest.raises(Exception, match="boom"):
            failing.result(timeout=30)
    finally:
        client.close()
    lines = _collect(sock, time.monotonic() + 1.5)
    sock.close()

    def values(name: str, kind: str) -> list[float]:
        return [float(line.split(":")[1].split("|")[0]) for line in lines
                if line.startswith(name + ":") and line.endswith("|" + kind)]  # fmt: skip

    assert sum(values("agentflow.events.received.echo", "c")) == 5
    assert sum(values("agentflow.events.succeeded.echo", "c")) == 5
    assert sum(values("agentflow.events.failed.boom", "c")) == 1
    latencies = values("agentflow.event.latency.echo", "ms")
    assert len(latencies) == 5 and all(0 <= v < 30_000 for v in latencies)
    assert len(values("agentflow.event.queue_wait.echo", "ms")) == 5
    assert values("agentflow.queue.depth.echo", "g")  # gauges every metrics_interval
    assert values("agentflow.events.in_flight", "g")


def test_metrics_can_be_switched_off(start_worker, redis_client) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    start_worker(env={"AGENTFLOW_MONITORING__ENABLE_METRICS": "false",
                      "AGENTFLOW_MONITORING__STATSD_PORT": str(port)})  # fmt: skip
    client = Client()
    try:
        client.emit({"type": "m", "agent": "echo"}).result(timeout=30)
    finally:
        client.close()
    assert _collect(sock, time.monotonic() + 0.7) == []
    sock.close()


def test_stats_are_sent_from_their_own_thread_packed_in_order() -> None:
    """The caller only queues; the sender thread delivers every stat, in order, in datagrams
    no larger than statsd's 512-byte limit."""
    import threading

    from agentflow.metrics import BufferedStatsClient

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = BufferedStatsClient("127.0.0.1", sock.getsockname()[1], prefix="agentflow",
                                 flush_interval=0.05)  # fmt: skip
    senders: set[str] = set()
    real_pipeline = client._client.pipeline

    def spy() -> object:
        senders.add(threading.current_thread().name)
        return real_pipeline()

    client._client.pipeline = spy  # type: ignore[method-assign]
    try:
        for i in range(300):
            client.incr(f"events.received.agent_{i % 7}")
            client.timing("event.latency.chat", i)
        sizes: list[int] = []
        lines: list[str] = []
        sock.settimeout(0.2)
        deadline = time.monotonic() + 5
        while len(lines) < 600 and time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            sizes.append(len(data))
            lines += data.decode().splitlines()
    finally:
        client.close()
        sock.close()
    assert len(lines) == 600
    assert [line for line in lines if "latency" in line] == [
        f"agentflow.event.latency.chat:{i:.6f}|ms" for i in range(300)
    ]
    assert sum(1 for line in lines if line == "agentflow.events.received.agent_3:1|c") == 43
    assert max(sizes) <= 512 and len(sizes) < 600
    assert senders == {"agentflow-statsd"}


def test_a_stat_named_after_a_non_ascii_agent_does_not_stop_the_others() -> None:
    from agentflow.metrics import BufferedStatsClient

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = BufferedStatsClient("127.0.0.1", sock.getsockname()[1], prefix="agentflow",
                                 flush_interval=0.05)  # fmt: skip
    try:
        client.incr("events.received.résumé")
        time.sleep(0.2)  # one flush with the odd name, then more stats
        client.incr("events.received.echo")
        lines = _collect(sock, time.monotonic() + 1.0)
    finally:
        client.close()
        sock.close()
    assert lines == ["agentflow.events.received.r_sum_:1|c", "agentflow.events.received.echo:1|c"]
    assert client._sender.is_alive() is False  # close() stopped it
