"""The blocking Client's admissions and result waits on the process's event loop: from many
threads, across a fork, and called on the loop's own thread (a worker's async agent)."""

from __future__ import annotations

import os
import threading

import pytest

from agentflow import Client

pytestmark = pytest.mark.integration


def test_results_arrive_for_many_threads_on_one_client(start_worker, client: Client) -> None:
    start_worker(concurrency=50)
    got: dict[int, object] = {}

    def user(i: int) -> None:
        handle = client.emit({"type": "t", "agent": "echo", "data": {"i": i}})
        got[i] = handle.result(timeout=60).output["echo"]["i"]

    threads = [threading.Thread(target=user, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert got == {i: i for i in range(40)}


def test_a_client_made_before_a_fork_works_in_the_child_and_the_parent(
    start_worker, client: Client
) -> None:
    """As under gunicorn's --preload: the client was used in the parent, then the process
    forked; the child has no loop thread of the parent's and makes its own."""
    start_worker()
    assert client.emit({"type": "t", "agent": "echo", "data": {"who": "parent"}}).result(
        timeout=30).output["echo"] == {"who": "parent"}  # fmt: skip
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own emit and wait worked
        code = 1
        try:
            result = client.emit({"type": "t", "agent": "echo", "data": {"who": "child"}}).result(
                timeout=30)  # fmt: skip
            code = 0 if result.output["echo"] == {"who": "child"} else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.emit({"type": "t", "agent": "echo", "data": {"who": "again"}}).result(
        timeout=30).output["echo"] == {"who": "again"}  # fmt: skip


def test_a_client_called_on_the_workers_loop_emits_without_blocking_it(
    start_worker, client: Client
) -> None:
    """An async agent that calls the blocking Client runs on the worker's loop: its emit goes
    out on the caller's thread instead of waiting for the loop it blocks."""
    start_worker()
    first = client.emit({"type": "t", "agent": "emit_on_loop", "data": {"x": 7}})
    emitted = first.result(timeout=30).output["emitted"]
    assert client.result(emitted, timeout=30).output["echo"] == {"x": 7}
