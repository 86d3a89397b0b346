"""Tool calls fan out as chords on real workers: parallel, failure-proof, durable, streamed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow import Client, EventFailed
from agentflow._redis.queues import TOOLS_QUEUE, agent_queue
from agentflow.dlq import DeadLetterQueue
from agentflow.mock_llm import MockServer
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


def run_tools(client: Client, *calls: dict[str, Any], timeout: float = 60) -> list[dict]:
    handle = client.emit({"type": "t", "agent": "tools", "data": {"calls": list(calls)}})
    return list(handle.result(timeout=timeout).output["results"])


def test_three_tools_run_in_parallel(start_worker, client: Client) -> None:
    start_worker(concurrency=8)
    results = run_tools(client, *({"name": "sleep", "args": {"seconds": 0.2}} for _ in range(3)))
    assert [r["output"] for r in results] == [0.2, 0.2, 0.2]
    assert all(r["error"] is None for r in results)
    # Parallel: every call started before any of them finished.
    assert max(r["started"] for r in results) < min(r["finished"] for r in results)


def test_a_fan_out_sent_directly_runs_on_celerys_own_worker_path(
    start_worker, client: Client
) -> None:
    """The agent's worker publishes the chord itself (asyncio pool); the tools worker
    runs the calls through Celery's prefork pool and Celery's chord completes the body."""
    start_worker(queues=[agent_queue("tools")], concurrency=8)
    start_worker(queues=[TOOLS_QUEUE], pool="prefork", concurrency=2)
    results = run_tools(client, {"name": "add", "args": {"a": 1, "b": 2}},
                        {"name": "add", "args": {"a": 3, "b": 4}},
                        {"name": "no_such_tool"})  # fmt: skip
    assert [r["output"] for r in results[:2]] == [3, 7]
    assert "no tool named 'no_such_tool'" in results[2]["error"]


def test_a_fan_out_through_celerys_canvas_completes(start_worker, client: Client) -> None:
    """On Celery's own pool (`[runner] pool = "threads"`) the event's task replaces itself
    with Celery's chord (Task.replace); the continuation still resumes the agent with every
    result."""
    start_worker(concurrency=8, env={"AGENTFLOW_RUNNER__POOL": "threads"})
    results = run_tools(client, {"name": "add", "args": {"a": 1, "b": 2}},
                        {"name": "sleep", "args": {"seconds": 0.05}})  # fmt: skip
    assert [r["output"] for r in results] == [3, 0.05]


def test_failing_timed_out_and_unknown_tools_give_error_results(
    start_worker, client: Client
) -> None:
    start_worker(concurrency=8)
    results = run_tools(
        client,
        {"name": "add", "args": {"a": 2, "b": 3}},
        {"name": "explode", "args": {"why": "on purpose"}},
        {"name": "crawl", "args": {"seconds": 3}},
        {"name": "no_such_tool"},
        {"name": "add", "args": {"a": "not a number"}},
    )
    assert results[0]["output"] == 5 and results[0]["error"] is None
    assert "ValueError: exploded: on purpose" in results[1]["error"]
    assert "timed out after 0.3s" in results[2]["error"]
    assert "no tool named 'no_such_tool'" in results[3]["error"]
    assert "invalid arguments" in results[4]["error"] and "a:" in results[4]["error"]


def test_a_cacheable_tool_hit_skips_the_task(start_worker, client: Client, redis_client) -> None:
    start_worker()
    first = run_tools(client, {"name": "add", "args": {"a": 20, "b": 22}})
    second = run_tools(client, {"name": "add", "args": {"b": 22, "a": 20}})
    assert first[0]["output"] == second[0]["output"] == 42
    assert first[0]["cached"] is False and second[0]["cached"] is True
    assert second[0]["started"] == 0  # no task ran it


def test_assistant_loops_llm_and_tools_until_it_answers(
    start_worker, mock_llm: MockServer, client: Client
) -> None:
    start_worker(concurrency=8, env={
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1",
    })  # fmt: skip
    prompt = (
        'CALL add {"a": 2, "b": 3}\nCALL add {"a": 10, "b": 1}\nTHEN\nCALL add {"a": 5, "b": 5}'
    )
    handle = client.emit({"type": "q", "agent": "assistant",
                          "data": {"prompt": prompt, "tools": ["add"], "cache": False}})  # fmt: skip
    result = handle.result(timeout=60)
    assert result.output["content"] == "mock: tool results: 5.0 | 11.0 | 10.0"
    assert result.output["steps"] == 3  # three tool messages went back to the model
    assert result.usage.llm_calls == 3
    assert mock_llm.stats()["chat"] == 3  # LLM → 2 tools → LLM → 1 tool → LLM


def test_max_steps_ends_a_runaway_agent_in_the_dlq(
    start_worker, client: Client, redis_client
) -> None:
    start_worker()
    handle = client.emit({"type": "t", "agent": "greedy"})
    with pytest.raises(EventFailed):
        handle.result(timeout=30)
    letters = DeadLetterQueue(redis_client, TEST_PREFIX).list()
    assert any("max_steps=2" in letter.reason for letter in letters)


def test_a_tool_worker_killed_mid_call_loses_nothing(
    start_worker, client: Client, redis_client
) -> None:
    env = {"AGENTFLOW_RUNNER__EVENT_TIMEOUT": "4s", "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "10s"}
    start_worker(queues=[agent_queue("tools")], env=env)
    victim = start_worker(queues=[TOOLS_QUEUE], env=env)
    handle = client.emit({"type": "t", "agent": "tools", "data": {"calls": [
        {"name": "marked_sleep", "args": {"seconds": 2, "mark": "kill"}},
        {"name": "add", "args": {"a": 1, "b": 2}},
    ]}})  # fmt: skip
    key = f"{TEST_PREFIX}:test:tool:kill"
    deadline = time.monotonic() + 30
    while not redis_client.llen(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.kill()  # SIGKILL mid-call: the tool task is unacked
    survivor = start_worker(queues=[TOOLS_QUEUE], env=env)
    results = handle.result(timeout=90).output["results"]
    assert [r["output"] for r in results] == [2, 3]
    starts = [int(p) for p in redis_client.lrange(key, 0, -1)]
    assert starts[0] == victim.pid and starts[-1] == survivor.pid


def test_a_streaming_tool_delivers_100k_items_complete_and_in_order(
    start_worker, client: Client, redis_client
) -> None:
    start_worker()
    handle = client.emit({"type": "t", "agent": "tools",
                          "data": {"calls": [{"name": "count", "args": {"n": 100_000}}]}})  # fmt: skip
    items = list(handle.stream(timeout=60))
    assert len(items) == 100_000
    assert all(item["i"] == k for k, item in enumerate(items))
    result = handle.result(timeout=30)
    assert result.output["results"][0]["output"] == {"streamed": 100_000}
