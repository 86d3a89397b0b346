"""Chaining by result: a result's route emits the next event in the same step that stores
the result; handle.result(follow=True) waits for the end of the chain; max_hops cuts a
cycle."""

from __future__ import annotations

import pytest

from agentflow import Client
from agentflow.dlq import DeadLetterQueue
from agentflow.state import StateStore
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


def _runs(redis_client, root: str, hop: int) -> set[bytes]:
    return redis_client.smembers(f"{TEST_PREFIX}:test:relay:{root}:{hop}")


@pytest.mark.parametrize("pool", [None, "prefork"])
def test_a_routed_result_runs_the_next_agent_and_follow_waits_for_the_end(
    pool: str | None, start_worker, client: Client, redis_client
) -> None:
    start_worker(pool=pool)
    handle = client.emit({"type": "t", "agent": "relay", "session_id": "chain",
                          "data": {"until": 3}, "metadata": {"tenant": "a"}})  # fmt: skip
    first = handle.result(timeout=30)
    assert first.output == {"hop": 0} and first.route == "relay"
    assert len(first.next_events) == 1
    last = handle.result(timeout=30, follow=True)
    assert last.output["hop"] == 3 and last.output["root"] == handle.id
    assert last.next_events == []
    for hop in range(4):  # one event per hop, each run once
        assert len(_runs(redis_client, handle.id, hop)) == 1
    second = client.result(first.next_events[0], timeout=30)
    assert second.output == {"hop": 1}
    state = StateStore(redis_client, prefix=TEST_PREFIX).load("chain")
    assert state["hops"] == 3  # the session goes along the chain


def test_a_route_to_several_agents_emits_one_event_each(start_worker, client: Client) -> None:
    start_worker()
    result = client.emit({"type": "t", "agent": "split"}).result(timeout=30)
    assert len(result.next_events) == 2
    outputs = [client.result(i, timeout=30).output for i in result.next_events]
    assert outputs == [{"text": "HI"}, {"text": "hi!"}]


def test_a_cycle_stops_at_max_hops_and_the_cut_event_is_dead_lettered(
    start_worker, client: Client, redis_client
) -> None:
    start_worker(env={"AGENTFLOW_RUNNER__MAX_HOPS": "4"})
    handle = client.emit({"type": "t", "agent": "relay", "data": {"until": 1000}})
    last = handle.result(timeout=30, follow=True)
    assert last.output == {"hop": 4} and last.next_events == []
    [entry] = DeadLetterQueue(redis_client, TEST_PREFIX).list()
    assert "max_hops=4" in entry.reason
    assert entry.event is not None and entry.event["metadata"]["chain"]["hop"] == 5
    assert not _runs(redis_client, handle.id, 5)
