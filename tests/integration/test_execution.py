"""AgentFlow's asyncio pool and Celery's pools (threads, prefork) behave the same."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from agentflow import Client
from agentflow._redis.queues import RUN_EVENT_TASK, agent_queue
from agentflow.state import StateStore
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("setting", "pool", "banner"),
    [("asyncio", None, "(asyncio_pool)"), ("threads", None, "(thread)"),
     ("asyncio", "prefork", "(prefork)"), ("asyncio", "threads", "(thread)")],
)  # fmt: skip
def test_every_pool_gives_the_same_results(
    setting: str, pool: str | None, banner: str, start_worker, client: Client, redis_client
) -> None:
    """One pipeline: AgentFlow's pool, Celery's threads (`[runner] pool = "threads"` or `-P
    threads`) and `-P prefork` run the same runner, with the same results and state; the
    worker honours `-P` over the setting (its banner says which pool runs)."""
    session = f"s-{setting}-{pool}"
    worker = start_worker(env={"AGENTFLOW_RUNNER__POOL": setting}, concurrency=8,
                          pool=pool)  # fmt: skip
    handles = client.emit_many(
        {"type": "t", "agent": "tally", "session_id": session, "data": {"n": 3}} for _ in range(40)
    )
    results = [h.result(timeout=60) for h in handles]
    assert all(r.agent == "tally" and r.error is None for r in results)
    state = StateStore(redis_client, prefix=TEST_PREFIX).load(session)
    assert state["total"] == 120
    assert banner in worker.log()


def test_a_plain_celery_producer_reads_a_directly_run_result(start_worker, redis_url) -> None:
    """The finish script writes Celery's own result entry: AsyncResult.get sees it."""
    start_worker()
    plain = Celery("plain-producer", broker=redis_url, backend=redis_url)
    try:
        async_result = plain.send_task(
            RUN_EVENT_TASK, args=[{"type": "t", "agent": "echo", "data": {"x": 1}}],
            queue=agent_queue("echo"),
        )  # fmt: skip
        value = async_result.get(timeout=30)
        assert async_result.status == "SUCCESS"
        assert async_result.date_done is not None
    finally:
        plain.close()
    assert value["output"] == {"echo": {"x": 1}, "type": "t"}


def test_warm_shutdown_lets_running_events_finish_once(
    start_worker, client: Client, redis_client
) -> None:
    """SIGTERM while events run: they finish and are acked; none is run a second time."""
    worker = start_worker(concurrency=8)
    handles = client.emit_many(
        {"type": "t", "agent": "sleepy", "data": {"seconds": 1.5}} for _ in range(6)
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # all six are running
        started = sum(redis_client.llen(f"{TEST_PREFIX}:test:started:{h.id}") for h in handles)
        if started == 6:
            break
        time.sleep(0.05)
    worker.stop(timeout=30)
    assert worker.proc.returncode == 0
    for h in handles:
        assert h.ready()  # finished before the worker exited, not left for redelivery
    start_worker()  # a second worker would run anything that was left unacked
    time.sleep(2)
    runs = [redis_client.llen(f"{TEST_PREFIX}:test:started:{h.id}") for h in handles]
    assert runs == [1] * 6
    assert [h.result(timeout=5).output["slept"] for h in handles] == [1.5] * 6


def test_producer_and_worker_survive_a_script_flush(start_worker, client: Client, redis_client):
    """Redis restarted or SCRIPT FLUSH: Lua scripts are loaded again, no event is lost."""
    start_worker()
    assert client.emit({"type": "t", "agent": "echo"}).result(timeout=30).error is None
    redis_client.script_flush()
    handles = client.emit_many({"type": "t", "agent": "echo", "data": {"i": i}} for i in range(5))
    assert [h.result(timeout=30).output["echo"]["i"] for h in handles] == list(range(5))


def test_a_gevent_worker_is_refused_with_the_reason(redis_client) -> None:
    """Under gevent the event loop never runs: the worker must stop at once, saying why."""
    import subprocess
    import sys

    from tests.conftest import ROOT, cli_env

    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "agentflow", "worker", "-P", "gevent", "-c", "4",
         "--without-mingle", "--without-gossip", "-l", "INFO"],
        env=cli_env(), cwd=str(ROOT), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot run on the gevent pool" in proc.stdout + proc.stderr


def test_a_result_backend_on_another_database_gets_every_result(start_worker, redis_url) -> None:
    """With `[broker] result_url` on another Redis database the worker takes Celery's own
    path (the finish script writes results through the broker's Redis); events and fan-outs
    still complete, and the producer reads every result from the result backend."""
    import redis

    base, db = redis_url.rsplit("/", 1)
    result_url = f"{base}/{int(db) + 1}"
    results_db = redis.Redis.from_url(result_url)
    results_db.flushdb()
    worker = start_worker(concurrency=8, env={"AGENTFLOW_BROKER__RESULT_URL": result_url})
    app = Celery("split-backend", broker=redis_url, backend=result_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    client = Client(app=app)
    try:
        echo = client.emit({"type": "t", "agent": "echo", "data": {"x": 1}})
        tools = client.emit({"type": "t", "agent": "tools",
                             "data": {"calls": [{"name": "add", "args": {"a": 1, "b": 2}}]}})  # fmt: skip
        assert echo.result(timeout=30).output == {"echo": {"x": 1}, "type": "t"}
        assert [r["output"] for r in tools.result(timeout=30).output["results"]] == [3]
        assert results_db.exists(f"celery-task-meta-{echo.id}")
    finally:
        client.close()
        app.close()
        results_db.flushdb()
        results_db.close()
    assert "result backend is not the broker's Redis database" in worker.log()
