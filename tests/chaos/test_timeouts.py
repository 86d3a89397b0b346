"""A timeout frees what it took: the CPU, the thread, the worker's slot; SIGTERM still exits.

``spin`` computes for ever and ``nap`` sleeps in a C call for an hour; both have a 1 s time
limit. Their events must fail with "timed out" and be dead-lettered, the spinning code must
stop (the worker's CPU comes back), healthy events must keep succeeding, and SIGTERM must end
the worker within its grace period even though a sleeping thread is still stuck. Once more
threads are stuck than ``[runner] max_stuck_threads`` allows, the worker restarts itself
gracefully (same pid, a fresh process) and serves again.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from agentflow import EventFailed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    return float(times.user + times.system)


def test_spinning_and_sleeping_agents_are_stopped_and_sigterm_exits(start_worker, client):
    worker = start_worker(concurrency=8, env={"AGENTFLOW_RUNNER__MAX_STUCK_THREADS": "16"})
    spinning = [client.emit({"type": "t", "agent": "spin"}) for _ in range(3)]
    sleeping = [client.emit({"type": "t", "agent": "nap"}) for _ in range(3)]
    for handle in spinning + sleeping:
        with pytest.raises(EventFailed, match="timed out after 1s"):
            handle.result(timeout=30)
    # The spinning code was stopped: over two quiet seconds the worker is nearly idle.
    before = _cpu_seconds(worker.pid)
    time.sleep(2.0)
    used = _cpu_seconds(worker.pid) - before
    assert used < 0.6, f"worker used {used:.2f}s of CPU in 2s: an agent is still spinning"
    # Healthy events still run, many at once, though three threads are stuck sleeping.
    handles = client.emit_many({"type": "t", "agent": "echo", "data": {"i": i}} for i in range(50))
    assert [h.result(timeout=30).output["echo"]["i"] for h in handles] == list(range(50))
    # SIGTERM: a warm shutdown that does not wait for the stuck threads.
    started = time.monotonic()
    worker.kill(signal.SIGTERM)
    worker.proc.wait(timeout=20)
    assert time.monotonic() - started < 15


def test_worker_restarts_itself_once_too_many_threads_are_stuck(start_worker, client):
    worker = start_worker(concurrency=8, env={"AGENTFLOW_RUNNER__MAX_STUCK_THREADS": "2"})
    naps = [client.emit({"type": "t", "agent": "nap"}) for _ in range(4)]
    for handle in naps:
        with pytest.raises(EventFailed, match="timed out"):
            handle.result(timeout=30)
    deadline = time.monotonic() + 60
    while worker.log().count(" ready.") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    log = worker.log()
    assert "worker restarting itself" in log and log.count(" ready.") == 2, log[-3000:]
    assert worker.proc.poll() is None  # the same process (pid), running a fresh program
    handle = client.emit({"type": "t", "agent": "echo", "data": {"after": "restart"}})
    assert handle.result(timeout=30).output["echo"] == {"after": "restart"}


def test_a_non_blocking_agent_that_spins_is_stopped_on_the_loop(start_worker, client):
    """An agent declared blocking=False runs on the event loop itself; spinning there it
    would stall every event of the process. Its time limit still stops it."""
    start_worker(concurrency=8)
    handle = client.emit({"type": "t", "agent": "spin_on_loop"})
    with pytest.raises(EventFailed, match="timed out after 1s"):
        handle.result(timeout=30)
    ok = client.emit_many({"type": "t", "agent": "echo", "data": {"i": i}} for i in range(20))
    assert [h.result(timeout=30).output["echo"]["i"] for h in ok] == list(range(20))
