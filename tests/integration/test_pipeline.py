"""The event pipeline end to end: producers of every kind, real workers, per-agent queues."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentflow import Client, load_settings
from agentflow._redis.queues import agent_queue
from tests.conftest import TEST_REDIS_URL, cli_env

pytestmark = pytest.mark.integration


def test_emit_and_result(start_worker, client: Client) -> None:
    start_worker()
    handle = client.emit({"type": "greet", "agent": "echo", "data": {"hello": "world"}})
    result = handle.result(timeout=30)
    assert result.output == {"echo": {"hello": "world"}, "type": "greet"}
    assert result.event_id == handle.id and result.agent == "echo"
    assert result.worker and result.timings["agent"] >= 0
    # The same result is available by id, from any client.
    assert client.result(handle.id, timeout=5).output == result.output


def test_emit_many_publishes_all_and_every_result_arrives(start_worker, client: Client) -> None:
    start_worker(concurrency=8)
    handles = client.emit_many({"type": "n", "agent": "echo", "data": {"i": i}} for i in range(200))
    outputs = [h.result(timeout=60).output["echo"]["i"] for h in handles]
    assert outputs == list(range(200))


def test_routing_by_type_through_route_table(start_worker, redis_client) -> None:
    routes = '{"greeting": "echo"}'
    start_worker(env={"AGENTFLOW_RUNNER__ROUTES": routes})
    client = Client(settings=load_settings(runner={"routes": {"greeting": "echo"}}))
    try:
        handle = client.emit({"type": "greeting", "data": {"x": 1}})
        assert handle.queue == agent_queue("echo")
        assert handle.result(timeout=30).agent == "echo"
    finally:
        client.close()


def test_worker_serving_one_agent_queue_leaves_others_queued(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(queues=[agent_queue("echo")])
    echo = client.emit({"type": "t", "agent": "echo"})
    tally = client.emit({"type": "t", "agent": "tally"})
    assert echo.result(timeout=30).agent == "echo"
    assert not tally.ready()
    assert redis_client.llen(agent_queue("tally")) == 1
    start_worker(queues=[agent_queue("tally")])
    assert tally.result(timeout=30).agent == "tally"


def test_plain_celery_producer_without_agentflow(start_worker, tmp_path) -> None:
    """A process that imports nothing of agentflow sends the task by name and gets the result."""
    start_worker()
    script = tmp_path / "producer.py"
    script.write_text(
        "import json, sys\n"
        "from celery import Celery\n"
        "url = sys.argv[1]\n"
        "app = Celery(broker=url, backend=url)\n"
        "event = {'type': 'ping', 'agent': 'echo', 'data': {'from': 'plain celery'}}\n"
        "r = app.send_task('agentflow.run_event', args=[event], queue='agentflow.agent.echo')\n"
        "print(json.dumps(r.get(timeout=30)))\n"
        "assert 'agentflow' not in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, str(script), TEST_REDIS_URL],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["output"] == {"echo": {"from": "plain celery"}, "type": "ping"}
    assert result["agent"] == "echo"


def test_cli_emit_wait_prints_the_result(start_worker) -> None:
    start_worker()
    out = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "emit", "--agent", "echo", "--type", "cli",
         "--data", '{"a": 1}', "--session", "s-cli", "--wait"],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["output"]["echo"] == {"a": 1}
    assert result["state_updates"]["incr"] == {"events": 1}


def test_cli_emit_refuses_bad_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "emit", "--agent", "echo", "--type", "t",
         "--data", "{not json"],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert out.returncode != 0
    assert "Invalid value for '--data': not valid JSON" in out.stderr
