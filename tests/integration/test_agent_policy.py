"""Per-agent policy (`[agents.<name>]`): timeout, retries, a cluster-wide cap and rate
limit, LLM model and cache; validated when a worker starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentflow import Client
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import EventFailed
from agentflow.mock_llm import MockServer
from agentflow.timeline import read_trace
from tests.conftest import TEST_PREFIX, cli_env

pytestmark = pytest.mark.integration


def test_a_policy_timeout_replaces_the_agents_own(start_worker, client: Client,
                                                  redis_client) -> None:  # fmt: skip
    start_worker(env={"AGENTFLOW_AGENTS__NAP__TIMEOUT": "300ms"})
    handle = client.emit({"type": "t", "agent": "nap"})  # the agent itself says 1 s
    with pytest.raises(EventFailed, match=r"timed out after 0\.3s"):
        handle.result(timeout=30)


RETRY = {
    "AGENTFLOW_AGENTS__FLAKY__RETRY__ATTEMPTS": "3",
    "AGENTFLOW_AGENTS__FLAKY__RETRY__BACKOFF": "50ms",
    "AGENTFLOW_AGENTS__FLAKY__RETRY__ON": '["agent_error"]',
}


@pytest.mark.parametrize("pool", [None, "prefork"])
def test_a_retry_policy_runs_a_failing_agent_again(pool: str | None, start_worker,
                                                   client: Client, redis_client) -> None:  # fmt: skip
    start_worker(env=RETRY, pool=pool)
    recovers = client.emit({"type": "t", "agent": "flaky", "data": {"fail_times": 2}})
    assert recovers.result(timeout=30).output == {"runs": 3}
    gives_up = client.emit({"type": "t", "agent": "flaky", "data": {"fail_times": 5}})
    with pytest.raises(EventFailed, match="run 3 of 3: no attempts left"):
        gives_up.result(timeout=30)
    assert int(redis_client.get(f"{TEST_PREFIX}:test:flaky:{gives_up.id}")) == 3
    assert len(DeadLetterQueue(redis_client, TEST_PREFIX)) == 1


def test_max_concurrency_holds_across_workers(start_worker, client: Client,
                                              redis_client) -> None:  # fmt: skip
    env = {"AGENTFLOW_AGENTS__CROWD__MAX_CONCURRENCY": "2"}
    start_worker(env=env, concurrency=8)
    start_worker(env=env, concurrency=8)
    handles = client.emit_many({"type": "t", "agent": "crowd", "data": {"seconds": 0.1}}
                               for _ in range(20))  # fmt: skip
    assert all(h.result(timeout=60).output == {"ok": True} for h in handles)
    seen = [int(x) for x in redis_client.lrange(f"{TEST_PREFIX}:test:crowd:seen", 0, -1)]
    assert len(seen) == 20 and max(seen) <= 2
    assert redis_client.zcard(f"{TEST_PREFIX}:agent:crowd:slots") == 0


def test_a_rate_limit_spaces_the_agents_starts(start_worker, client: Client,
                                               redis_client) -> None:  # fmt: skip
    start_worker(env={"AGENTFLOW_AGENTS__CROWD__RATE_LIMIT": "5"}, concurrency=16)
    handles = client.emit_many({"type": "t", "agent": "crowd", "data": {"seconds": 0}}
                               for _ in range(10))  # fmt: skip
    assert all(h.result(timeout=60).output == {"ok": True} for h in handles)
    starts = sorted(float(x) for x in redis_client.lrange(f"{TEST_PREFIX}:test:crowd:starts",
                                                         0, -1))  # fmt: skip
    # 10 events at 5/s (a burst of one second's worth): at least 1 s between first and last
    assert starts[-1] - starts[0] >= 0.9


def test_llm_model_and_cache_follow_the_agents_policy(
    start_worker, client: Client, redis_client, mock_llm: MockServer
) -> None:
    start_worker(env={
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1",
        "AGENTFLOW_LLM__OPENAI__API_KEY": "sk-test",
        "AGENTFLOW_MONITORING__TRACE": "true",
        "AGENTFLOW_AGENTS__CHAT__LLM_MODEL": "policy-model",
        "AGENTFLOW_AGENTS__CHAT__CACHE": "false",
    })  # fmt: skip
    for _ in range(2):
        handle = client.emit({"type": "t", "agent": "chat", "data": {"prompt": "same"}})
        handle.result(timeout=30)
    assert mock_llm.stats()["chat"] == 2  # not cached
    trace = read_trace(redis_client, TEST_PREFIX, handle.id)
    [llm] = [s for s in trace["events"][0]["steps"] if s["kind"] == "llm"]
    assert llm["model"] == "policy-model" and llm["cache_hit"] is False


def test_a_policy_for_an_unknown_agent_stops_the_worker_with_the_reason(
    start_worker,
) -> None:
    worker = start_worker(env={"AGENTFLOW_AGENTS__NOSUCH__TIMEOUT": "5s"}, wait=False)
    assert worker.proc.wait(60) != 0
    assert "no agent named 'nosuch' is registered" in worker.log()
    shown = subprocess.run([sys.executable, "-m", "agentflow.cli", "config", "show"],
                           env=cli_env(AGENTFLOW_AGENTS__NAP__TIMEOUT="2s"),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "nap" in shown.stdout and "policies" in shown.stdout
