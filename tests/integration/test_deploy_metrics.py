"""What a real worker sends over statsd is what deploy/'s exporter mapping, dashboard and
KEDA triggers expect: every stat it sends matches a mapping rule, and the Prometheus names
the dashboard and the autoscaler read are among those the stats become."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
import yaml

from agentflow import Client
from agentflow.mock_llm import MockServer
from tests.unit.test_deploy import COMPOSE, K8S, PROMQL_METRIC, glob_matches, mapping

pytestmark = pytest.mark.integration


def _stat_names(sock: socket.socket, until: float) -> set[str]:
    names: set[str] = set()
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            continue
        names |= {line.split(":", 1)[0] for line in data.decode().splitlines()}
    return names


def _prometheus_name(stat: str, rules: list[dict[str, str]]) -> str | None:
    """The metric statsd-exporter makes of `stat`: its first matching rule's name."""
    return next((r["name"] for r in rules if glob_matches(r["match"], stat)), None)


def test_a_workers_stats_become_the_metrics_deploy_reads(start_worker, mock_llm: MockServer):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    start_worker(env={
        "AGENTFLOW_MONITORING__ENABLE_METRICS": "true",
        "AGENTFLOW_MONITORING__STATSD_PORT": str(sock.getsockname()[1]),
        "AGENTFLOW_MONITORING__METRICS_INTERVAL": "200ms",
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1",
        "AGENTFLOW_LLM__OPENAI__API_KEY": "sk-test-secret",
        "AGENTFLOW_LLM__OPENAI__RETRY_MAX_ATTEMPTS": "2",
        "AGENTFLOW_LLM__OPENAI__RETRY_INITIAL_INTERVAL": "50ms",
    })  # fmt: skip
    client = Client()
    try:
        client.emit({"type": "m", "agent": "echo"}).result(timeout=30)
        client.emit({"type": "m", "agent": "chat", "data": {"prompt": "hi"}}).result(timeout=30)
        calls = [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "sleep", "args": {}}]
        client.emit({"type": "m", "agent": "tools", "data": {"calls": calls}}).result(timeout=30)
        httpx.post(mock_llm.url + "/config", json={"fail_next": 2, "fail_status": 500},
                   timeout=5).raise_for_status()  # fmt: skip
        # two failed attempts: LLM errors counted, the event retried, then it succeeds
        flaky = client.emit({"type": "m", "agent": "chat", "data": {"prompt": "x", "cache": False}})
        flaky.result(timeout=60)
    finally:
        client.close()
    stats = _stat_names(sock, time.monotonic() + 2.0)
    sock.close()

    rules = mapping(COMPOSE / "statsd-mapping.yml")["mappings"]
    unmapped = sorted(s for s in stats if _prometheus_name(s, rules) is None)
    assert unmapped == []
    made = {_prometheus_name(s, rules) for s in stats}
    for needed in ("agentflow_events_succeeded_total", "agentflow_event_latency_seconds",
                   "agentflow_queue_backlog", "agentflow_tools_backlog", "agentflow_dlq_size",
                   "agentflow_events_in_flight", "agentflow_llm_tokens_total",
                   "agentflow_llm_cost_microusd_total", "agentflow_llm_errors_total",
                   "agentflow_llm_call_seconds", "agentflow_tool_call_seconds"):  # fmt: skip
        assert needed in made, (needed, sorted(made))

    # what KEDA reads is among them
    triggers = [t for d in yaml.safe_load_all((K8S / "keda.yaml").read_text()) if d
                for t in d["spec"]["triggers"]]  # fmt: skip
    keda = {m for t in triggers for m in PROMQL_METRIC.findall(t["metadata"]["query"])}
    assert keda <= made
    # and the dashboard's counters and gauges (histogram series carry a suffix)
    dashboard = json.loads((COMPOSE / "grafana/dashboards/agentflow.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    read = {re.sub(r"_(bucket|sum|count)$", "", m) for m in PROMQL_METRIC.findall(exprs)}
    never_sent = read - made
    # only metrics of situations this run did not create (an open breaker, cache hits, ...)
    assert never_sent <= {"agentflow_llm_breaker_open", "agentflow_llm_breaker_rejected_total",
                          "agentflow_events_failed_total", "agentflow_events_retried_total",
                          "agentflow_tool_errors_total", "agentflow_llm_cache_hits_total",
                          "agentflow_llm_cache_misses_total"}, never_sent  # fmt: skip
