"""Fairness between tenants: with `[tenants] max_in_flight`, a flood from one tenant waits in
its own list, and another tenant's events on the same agent queue pass it."""

from __future__ import annotations

import time

import pytest

from agentflow import Client, load_settings
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration

FLOOD = 10_000
CAP = {"AGENTFLOW_TENANTS__MAX_IN_FLIGHT": "8"}


def test_a_flood_from_one_tenant_does_not_hold_back_another(
    start_worker, redis_client, monkeypatch
) -> None:
    for key, value in CAP.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(runner={"max_concurrent_events": 100_000,
                                     "event_buffer_size": 100_000})  # fmt: skip
    client = Client(settings=settings)
    start_worker(concurrency=16, env=CAP)
    try:
        flood = []
        for start in range(0, FLOOD, 2_000):
            flood += client.emit_many(
                {"type": "t", "agent": "pause", "tenant": "a", "data": {"seconds": 0.01}}
                for _ in range(start, min(FLOOD, start + 2_000))
            )  # fmt: skip
        assert redis_client.llen(f"{TEST_PREFIX}:tenant:a:parked") > FLOOD / 2  # held back
        others = [client.emit({"type": "t", "agent": "pause", "tenant": "b",
                               "data": {"seconds": 0.01}}) for _ in range(20)]  # fmt: skip
        for handle in others:
            assert handle.result(timeout=60).output["tenant"] == "b"
        a_done = int(redis_client.get(f"{TEST_PREFIX}:test:pause:a") or 0)
        # Without the cap, b's events would be queued behind the whole flood.
        assert a_done < FLOOD / 4, a_done
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # and the flood itself all runs, once each
            if int(redis_client.get(f"{TEST_PREFIX}:test:pause:a") or 0) >= FLOOD:
                break
            time.sleep(0.5)
        assert int(redis_client.get(f"{TEST_PREFIX}:test:pause:a") or 0) == FLOOD
        assert all(h.result(timeout=30).output["tenant"] == "a" for h in flood[-50:])
        assert redis_client.llen(f"{TEST_PREFIX}:tenant:a:parked") == 0
        assert redis_client.zcard(f"{TEST_PREFIX}:tenant:a:slots") == 0
    finally:
        client.close()


def test_events_without_a_tenant_or_cap_are_not_held(start_worker, client: Client,
                                                     redis_client) -> None:  # fmt: skip
    start_worker()
    handles = client.emit_many({"type": "t", "agent": "pause", "tenant": "c"} for _ in range(30))
    assert all(h.result(timeout=30).output["tenant"] == "c" for h in handles)
    assert not redis_client.exists(f"{TEST_PREFIX}:tenant:c:parked",
                                   f"{TEST_PREFIX}:tenant:c:slots")  # fmt: skip
