"""Workers on several hosts, for real: hosts are Linux network namespaces on one bridge.

A Redis host, a producer host and three worker hosts (scripts/netns_cluster.py); workers are
``celery -A agentflow worker`` processes pointed at the Redis host's address. Each event is a
``stint``: it records its start, waits 0.2 s on the worker's loop, and adds 1 to its own
session's total, so a test counts every event's results, runs and applied deltas.

- A worker host turned off mid-load (its link cut, every process in it SIGKILLed): every
  event completes once, and the events it held run again within the visibility timeout
  plus one restore sweep.
- A worker host cut off for 30 s: every event completes once, and the same worker process
  consumes again after the link comes back.

Needs root and ``ip netns``; skipped otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from scripts.netns_cluster import (
    LoadOutcome,
    NetnsCluster,
    cut_under_load,
    drained,
    kill_under_load,
    why_unavailable,
)

_UNAVAILABLE = why_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"namespace hosts: {_UNAVAILABLE}"),
]

VISIBILITY = 10.0
"""Seconds; the shortest AgentFlow allows, so the tests wait as little as possible."""


def _restore_interval() -> float:
    """The restore sweep's period the workers get at that visibility timeout."""
    from agentflow import load_settings
    from agentflow._redis.celery_settings import build_celery_config

    config = build_celery_config(load_settings(runner={"visibility_timeout": VISIBILITY}))
    return float(config["broker_transport_options"]["unacked_restore_interval"])


ENV = {"AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": f"{VISIBILITY:g}s"}
EVENTS = 1200
SECONDS = 0.2


@pytest.fixture
def cluster() -> Iterator[NetnsCluster]:
    """Three worker hosts, started; everything removed afterwards (also on failure)."""
    with NetnsCluster(workers=3, tag=f"aft{uuid.uuid4().hex[:5]}", env=ENV) as c:
        c.start_workers()
        yield c


def _assert_once(result: LoadOutcome) -> None:
    assert result.errors == {}
    assert result.completed == result.sent  # every event has its result
    assert result.lost == 0  # every event's delta applied ...
    assert result.duplicated == 0  # ... exactly once


def test_a_host_turned_off_mid_load_loses_nothing_and_applies_nothing_twice(
    cluster: NetnsCluster,
) -> None:
    recovery = kill_under_load(cluster, "w2", EVENTS, SECONDS, kill_after=2.0,
                               visibility=VISIBILITY)  # fmt: skip
    print(f"\nhost off: {recovery.line()}")
    _assert_once(recovery.outcome)
    assert recovery.held, "the dead host held no messages: the kill missed the load"
    assert recovery.started_there > 0
    assert len(recovery.rerun_after) == recovery.started_there
    # Back within the visibility timeout (after the last renewal) plus one sweep; the margin
    # covers a loaded 2-core machine.
    bound = VISIBILITY + _restore_interval() + 8
    assert recovery.back_after is not None
    assert recovery.back_after <= bound
    assert max(recovery.rerun_after) <= bound
    assert drained(cluster) == (0, 0)  # nothing left unacked, nothing dead-lettered


def test_a_host_cut_off_for_30s_rejoins_and_every_event_completes_once(
    cluster: NetnsCluster,
) -> None:
    cut = cut_under_load(cluster, "w2", EVENTS, SECONDS, cut_after=2.0, cut_for=30.0)
    print(f"\ncut off 30s: {cut.line()}")
    _assert_once(cut.outcome)
    _assert_once(cut.probe)
    assert cut.in_flight, "w2 was running nothing at the cut: the cut missed the load"
    assert cut.back_after is not None, "w2 never consumed again after its link came back"
    assert cluster.worker_alive("w2")  # the same process: it reconnected by itself
    assert drained(cluster) == (0, 0)
