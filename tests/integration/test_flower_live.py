"""Flower's live view: the tasks AgentFlow's pool runs appear in Flower's task list.

Flower builds its task list from Celery's task events (task-received, task-started,
task-succeeded, task-failed). Workers send them with ``-E``, or once asked at run time by
``celery control enable_events`` — which Flower itself broadcasts.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, cli_env

pytestmark = pytest.mark.integration

AUTH = ("ops", "secret")
ECHO_EVENTS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flower:
    """A `celery -A agentflow flower` subprocess and its HTTP API."""

    def __init__(self, log_path: Path, extra_args: list[str]) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "agentflow", "flower", f"--port={self.port}",
             *extra_args],
            env=cli_env(FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}"), stdout=self._log,
            stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        """What Flower has logged so far."""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET `path` on Flower's server, with its credentials."""
        return httpx.get(self.base + path, params=params, auth=AUTH, timeout=20)

    def wait_listening(self, timeout: float = 90.0) -> None:
        """Until Flower receives the worker's events (its heartbeats mark it online)."""

        def online() -> bool:
            metrics = self.get("/metrics").text
            return any(
                line.startswith("flower_worker_online{") and line.endswith(" 1.0")
                for line in metrics.splitlines()
            )

        _until(online, timeout, lambda: f"Flower never saw a worker online:\n{self.log()}")

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Flower's task list (``GET /api/tasks``): task id → fields."""
        response = self.get("/api/tasks", limit=10000)
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks

    def workers(self) -> list[dict[str, Any]]:
        """The rows of Flower's Workers page (from the workers' events)."""
        response = self.get("/workers", json=1)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["data"]
        return rows

    def stop(self) -> None:
        """Stop Flower."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def _until(check: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(why())
        time.sleep(0.5)


@pytest.fixture
def start_flower(tmp_path: Path) -> Iterator[Callable[..., Flower]]:
    """Factory: a Flower on a free loopback port, with basic auth; stopped at the end."""
    started: list[Flower] = []

    def start(*extra_args: str) -> Flower:
        flower = Flower(tmp_path / f"flower{len(started)}.log", list(extra_args))
        started.append(flower)
        _until(lambda: flower.get("/healthcheck").status_code == 200, 90,
               lambda: f"Flower did not start:\n{flower.log()}")  # fmt: skip
        return flower

    yield start
    for flower in started:
        flower.stop()


def _emit_workload(client: Any) -> tuple[list[str], str, str]:
    """20 echo events, one that fails, one fan-out; waits for them all to finish."""
    echoes = [client.emit({"type": "flower-live", "agent": "echo", "data": {"i": i}})
              for i in range(ECHO_EVENTS)]  # fmt: skip
    boom = client.emit({"type": "flower-live", "agent": "boom", "data": {"why": "on purpose"}})
    fan = client.emit({"type": "flower-live", "agent": "fanout",
                       "data": {"calls": 2, "seconds": 0}})  # fmt: skip
    for handle in echoes:
        handle.result(timeout=60)
    assert fan.result(timeout=60).output == {"indices": [0, 1], "errors": []}
    with pytest.raises(Exception, match="boom: on purpose"):
        boom.result(timeout=60)
    return [h.id for h in echoes], boom.id, fan.id


def _wait_listed(flower: Flower, echoes: list[str], boom: str, fan: str) -> dict[str, Any]:
    """Until Flower lists every event in its final state and the fan-out's two tool calls."""
    seen: dict[str, Any] = {}

    def listed() -> bool:
        nonlocal seen
        seen = flower.tasks()
        tools = [t for t in seen.values()
                 if t.get("name") == "agentflow.run_tool" and t.get("parent_id") == fan]  # fmt: skip
        return (
            all(seen.get(i, {}).get("state") == "SUCCESS" for i in echoes)
            and seen.get(boom, {}).get("state") == "FAILURE"
            and seen.get(fan, {}).get("state") == "SUCCESS"
            and sum(t.get("state") == "SUCCESS" for t in tools) == 2
        )

    def why() -> str:
        states = {k: (v.get("name"), v.get("state")) for k, v in seen.items()}
        return f"Flower's task list is incomplete: {states}\n{flower.log()[-3000:]}"

    _until(listed, 90, why)
    return seen


def test_flower_lists_tasks_of_a_worker_started_with_events(start_worker, start_flower,
                                                            client) -> None:  # fmt: skip
    """`worker -E`: every event, the failed one and the fan-out's tool calls, with states."""
    start_worker(extra_args=["-E"])
    flower = start_flower()
    flower.wait_listening()
    echoes, boom, fan = _emit_workload(client)
    seen = _wait_listed(flower, echoes, boom, fan)
    assert seen[echoes[0]]["name"] == "agentflow.run_event"
    assert seen[echoes[0]]["worker"], seen[echoes[0]]
    assert "boom: on purpose" in (seen[boom].get("exception") or "")


def test_flower_lists_tasks_once_events_are_enabled_at_run_time(start_worker, start_flower,
                                                                client) -> None:  # fmt: skip
    """A worker started without ``-E`` sends task events after ``enable_events`` (the
    broadcast Flower itself sends every 5 seconds)."""
    worker = start_worker()
    # Flower's own periodic broadcast is off here: the test sends it, once.
    flower = start_flower("--enable_events=False")
    flower.wait_listening()
    # Events off for sure before `before` runs: an enable_events broadcast still on its way
    # (a previous test's Flower sends one every 5 s) once made this test flaky.
    off = client.app.control.disable_events(reply=True, timeout=10)
    assert off and all("ok" in next(iter(r.values())) for r in off), off
    before = client.emit({"type": "flower-live", "agent": "echo", "data": {}})
    before.result(timeout=60)
    # The result is stored before Celery's request callbacks run on the consumer's thread
    # (they send task-succeeded when events are on): wait until `before` left the worker's
    # active list, or its task-succeeded may follow the enable_events below (a flaky run).
    active: Any = None

    def done() -> bool:
        nonlocal active
        replies = client.app.control.inspect(timeout=5).active() or {}
        active = [r["id"] for requests in replies.values() for r in requests]
        return bool(replies) and before.id not in active

    _until(done, 30, lambda: f"`before` still active: {active}")
    replies = client.app.control.enable_events(reply=True, timeout=10)
    assert replies and all("ok" in next(iter(r.values())) for r in replies), replies
    echoes, boom, fan = _emit_workload(client)
    _wait_listed(flower, echoes, boom, fan)
    # Not enabled yet when `before` ran: no event about it went out.
    listed = flower.tasks()
    assert before.id not in listed, (listed[before.id], worker.log()[-4000:])


def test_worker_without_events_sends_no_task_events(start_worker, start_flower, client) -> None:
    """Without ``-E`` and without ``enable_events``, Flower sees the worker, not its tasks."""
    start_worker()
    flower = start_flower("--enable_events=False")
    flower.wait_listening()
    handles = [client.emit({"type": "flower-live", "agent": "echo", "data": {"i": i}})
               for i in range(3)]  # fmt: skip
    for handle in handles:
        handle.result(timeout=60)
    time.sleep(3)  # events, if any were sent, reach Flower well within this
    assert not set(flower.tasks()) & {h.id for h in handles}


def test_no_task_stays_active_once_the_work_is_done(start_worker, start_flower, client) -> None:
    """After a burst of instant events, `inspect active` and Flower's Workers page (the
    workers' heartbeats) show nothing running: every finished request left the worker's
    active list (its accept and its result are handled in order)."""
    start_worker(extra_args=["-E"], concurrency=50)
    flower = start_flower()
    flower.wait_listening()
    handles = client.emit_many(
        [{"type": "flower-live", "agent": "echo", "data": {"i": i}} for i in range(300)]
    )
    for handle in handles:
        handle.result(timeout=120)
    active: Any = None

    def idle() -> bool:
        nonlocal active
        replies = client.app.control.inspect(timeout=5).active() or {}
        active = {name: [r["id"] for r in requests] for name, requests in replies.items()}
        return bool(replies) and not any(active.values())

    _until(idle, 60, lambda: f"finished requests still active: {active}")
    shown: Any = None

    def flower_idle() -> bool:
        nonlocal shown
        shown = {w["hostname"]: w.get("active") for w in flower.workers()}
        return bool(shown) and all(n == 0 for n in shown.values())

    _until(flower_idle, 60, lambda: f"Flower shows active tasks: {shown}")
