"""Tools that call HTTP APIs through agentflow.http, on real workers, against the mock server.

Each call goes from a tool task on a real `celery -A agentflow worker` to the mock server's
``/tool`` endpoint over loopback; what is checked is what a tool author sees: replies,
retries, limits and timeouts from ``[http]``, sync tools, prefork children, a clean stop.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentflow import Client
from agentflow.mock_llm import MockServer

pytestmark = pytest.mark.integration

MODULES = {"AGENTFLOW_AGENTS__MODULES": '["tests.agents", "tests.http_tools"]'}


def run_tools(client: Client, *calls: dict[str, Any]) -> list[dict[str, Any]]:
    handle = client.emit({"type": "t", "agent": "tools", "data": {"calls": list(calls)}})
    return list(handle.result(timeout=60).output["results"])


def test_async_tools_get_and_post_through_the_pool(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(concurrency=8, env=MODULES)
    url = f"{mock_llm.url}/tool"
    get, post = run_tools(
        client,
        {"name": "http_get", "args": {"url": url, "params": {"city": "Oslo"}}},
        {"name": "http_post", "args": {"url": url, "payload": {"q": "x", "n": 1}}},
    )
    assert get["error"] is None and post["error"] is None
    assert get["output"]["status"] == 200
    assert get["output"]["json"]["method"] == "GET"
    assert get["output"]["json"]["query"] == {"city": "Oslo"}
    assert get["output"]["json"]["user_agent"].startswith("agentflow")
    assert post["output"]["json"]["method"] == "POST"
    assert post["output"]["json"]["body"] == '{"q":"x","n":1}'
    assert mock_llm.stats()["tool"] == 2


def test_a_sync_tool_calls_through_the_workers_loop(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(concurrency=4, env=MODULES)
    [result] = run_tools(client, {"name": "http_get_sync",
                                  "args": {"url": f"{mock_llm.url}/tool",
                                           "params": {"a": "1"}}})  # fmt: skip
    assert result["error"] is None
    assert result["output"] == {"status": 200, "json": {
        "ok": True, "method": "GET", "query": {"a": "1"}, "body": "",
        "user_agent": result["output"]["json"]["user_agent"]}}  # fmt: skip


def test_the_httpx_client_on_the_pool_answers_like_httpx(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(concurrency=4, env=MODULES)
    [result] = run_tools(client, {"name": "http_via_httpx",
                                  "args": {"url": f"{mock_llm.url}/tool"}})  # fmt: skip
    assert result["error"] is None
    assert result["output"]["json"]["ok"] is True


def test_idempotent_calls_are_retried_and_posts_are_not(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(concurrency=4, env={**MODULES, "AGENTFLOW_HTTP__RETRY_BACKOFF": "10ms"})
    url = f"{mock_llm.url}/tool"
    httpx.post(f"{mock_llm.url}/config", json={"tool_fail_next": 2, "fail_status": 503})
    [get] = run_tools(client, {"name": "http_get", "args": {"url": url}})
    assert get["output"]["status"] == 200  # two 503s, then the answer (retries = 2)
    assert mock_llm.stats()["tool_status_503"] == 2

    httpx.post(f"{mock_llm.url}/config", json={"tool_fail_next": 1, "fail_status": 503})
    [post] = run_tools(client, {"name": "http_post", "args": {"url": url, "payload": {}}})
    assert post["output"]["status"] == 503  # a POST may have done its work: not repeated
    assert mock_llm.stats()["tool_status_503"] == 3


def test_retries_follow_the_config(start_worker, client: Client, mock_llm: MockServer) -> None:
    start_worker(concurrency=4, env={**MODULES, "AGENTFLOW_HTTP__RETRIES": "0"})
    httpx.post(f"{mock_llm.url}/config", json={"tool_fail_next": 1, "fail_status": 502})
    [get] = run_tools(client, {"name": "http_get", "args": {"url": f"{mock_llm.url}/tool"}})
    assert get["output"]["status"] == 502


@pytest.mark.parametrize("limit", [2, 0])
def test_the_connection_limit_bounds_calls_in_flight_to_an_api(
    limit: int, start_worker, client: Client, mock_llm: MockServer
) -> None:
    """Six parallel calls of 300 ms: with `max_connections_per_host = 2` the API never sees
    more than two at once; without a limit of its own, it sees all six."""
    env = {**MODULES, "AGENTFLOW_HTTP__MAX_CONNECTIONS_PER_HOST": str(limit)}
    start_worker(concurrency=8, env=env)
    call = {"name": "http_get",
            "args": {"url": f"{mock_llm.url}/tool", "params": {"latency": "300ms"}}}  # fmt: skip
    results = run_tools(client, *(call for _ in range(6)))
    assert all(r["output"]["status"] == 200 for r in results)
    assert mock_llm.stats()["tool_max_in_flight"] == (2 if limit else 6)


def test_a_slow_api_times_out_and_the_pool_keeps_serving(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(concurrency=4, env=MODULES)
    url = f"{mock_llm.url}/tool"
    [slow] = run_tools(client, {"name": "http_get_timeout",
                                "args": {"url": f"{url}?latency=2s", "timeout": 0.2}})  # fmt: skip
    assert slow["output"] == {"timeout": "ReadTimeout"}
    [fast] = run_tools(client, {"name": "http_get", "args": {"url": url}})
    assert fast["output"]["status"] == 200


def test_prefork_children_each_call_through_their_own_pool(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(pool="prefork", concurrency=2, env=MODULES)
    call = {"name": "http_get", "args": {"url": f"{mock_llm.url}/tool"}}
    for _ in range(3):
        results = run_tools(client, call, call, call)
        assert [r["output"]["status"] for r in results] == [200, 200, 200]


def test_the_worker_closes_its_pool_when_it_stops(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    worker = start_worker(concurrency=4, env=MODULES)
    [result] = run_tools(client, {"name": "http_get", "args": {"url": f"{mock_llm.url}/tool"}})
    assert result["output"]["status"] == 200
    worker.stop()
    assert "Unclosed" not in worker.log()
