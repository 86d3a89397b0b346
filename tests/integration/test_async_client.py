"""AsyncClient: the producer from asyncio code, against real workers and a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agentflow import (
    AsyncClient,
    BackpressureError,
    EventCancelled,
    EventFailed,
    EventTimeout,
    InvalidEvent,
    UnknownAgent,
)
from agentflow.config import reset_settings
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_settings(redis_client) -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _result_subscribers(redis_client) -> list[dict[str, Any]]:
    """Connections of this Redis subscribed to at least one channel."""
    return [c for c in redis_client.client_list() if int(c.get("sub", 0)) > 0]


def test_results_arrive_for_many_waiting_handles_on_one_subscription(start_worker,
                                                                     redis_client):  # fmt: skip
    start_worker(concurrency=50)

    async def main() -> tuple[Any, list[Any], int, list[Any]]:
        async with AsyncClient() as client:
            one = await client.emit({"type": "t", "agent": "echo", "data": {"n": -1}})
            handles = await client.emit_many(
                [{"type": "t", "agent": "sleepy", "data": {"seconds": 1}} for _ in range(40)]
            )
            waits = [asyncio.ensure_future(h.result(timeout=60)) for h in handles]
            await asyncio.sleep(0.3)  # every handle is waiting now; the events still run
            subscribers = len(_result_subscribers(redis_client))
            first, results = await one.result(timeout=30), await asyncio.gather(*waits)
            # Each result's channel is dropped once it came: nothing stays subscribed.
            deadline = time.monotonic() + 10
            while _result_subscribers(redis_client) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return first, results, subscribers, _result_subscribers(redis_client)

    first, results, subscribers, left = asyncio.run(main())
    assert first.output == {"echo": {"n": -1}, "type": "t"}
    assert len(results) == 40 and all(r.output["slept"] == 1 for r in results)
    assert subscribers == 1
    assert left == [], left
    assert _result_subscribers(redis_client) == []  # closed: the subscription is gone


def test_a_failed_event_raises_with_its_reason(start_worker, redis_client):
    start_worker()

    async def main() -> None:
        async with AsyncClient() as client:
            handle = await client.emit({"type": "t", "agent": "boom", "data": {"why": "async"}})
            await handle.result(timeout=30)

    with pytest.raises(EventFailed, match="boom: async"):
        asyncio.run(main())


def test_bad_events_are_refused_before_anything_is_sent(redis_client):
    async def main(event: dict[str, Any]) -> None:
        async with AsyncClient() as client:
            await client.emit(event)

    with pytest.raises(InvalidEvent, match="NaN and Infinity"):
        asyncio.run(main({"type": "t", "agent": "echo", "data": {"x": float("nan")}}))
    with pytest.raises(UnknownAgent, match="no worker serves agent 'nobody'"):
        asyncio.run(main({"type": "t", "agent": "nobody"}))
    assert redis_client.llen("agentflow.agent.echo") == 0
    assert redis_client.llen("agentflow.agent.nobody") == 0


def test_backpressure_error_says_how_many_were_sent(redis_client, monkeypatch):
    monkeypatch.setenv("AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE", "3")
    monkeypatch.setenv("AGENTFLOW_RUNNER__BACKPRESSURE", "error")
    reset_settings()

    async def main() -> None:
        async with AsyncClient() as client:  # no worker: the queue fills
            await client.emit_many([{"type": "t", "agent": "echo"} for _ in range(5)])

    with pytest.raises(BackpressureError) as caught:
        asyncio.run(main())
    assert caught.value.sent == 3
    assert redis_client.llen("agentflow.agent.echo") == 3


def test_result_timeout_then_cancel_of_a_running_event(start_worker, redis_client):
    start_worker(concurrency=4)

    async def main() -> tuple[bool, bool]:
        async with AsyncClient() as client:
            handle = await client.emit({"type": "t", "agent": "slow_async",
                                        "data": {"seconds": 60}})  # fmt: skip
            with pytest.raises(EventTimeout):
                await handle.result(timeout=0.2)
            deadline = time.monotonic() + 30
            while not await client.redis.llen(f"{TEST_PREFIX}:test:started:{handle.id}"):
                assert time.monotonic() < deadline, "the event never started"
                await asyncio.sleep(0.05)
            cancelled = await handle.cancel()
            with pytest.raises(EventCancelled):
                await handle.result(timeout=15)
            again = await handle.cancel()  # it has finished (cancelled): nothing to do
            return cancelled, again

    assert asyncio.run(main()) == (True, False)
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0


def test_stream_yields_every_item_in_order_then_the_result(start_worker, redis_client):
    start_worker()

    async def main() -> tuple[list[Any], Any]:
        async with AsyncClient() as client:
            handle = await client.emit({"type": "t", "agent": "tools", "data": {
                "calls": [{"name": "count", "args": {"n": 2000}}]}})  # fmt: skip
            items = [item async for item in handle.stream(timeout=60)]
            return items, await handle.result(timeout=30)

    items, result = asyncio.run(main())
    assert [item["i"] for item in items] == list(range(2000))
    assert result.output["results"][0]["output"] == {"streamed": 2000}


def test_emits_fail_instead_of_hanging_while_redis_does_not_answer(tmp_path):
    """A stopped Redis (as a half-open connection looks): emits from many coroutines fail
    with a ConnectionError after the URL's socket_timeout and its retries, not hang; once
    Redis answers again, the client emits on a new connection."""
    from celery import Celery
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from agentflow import load_settings
    from agentflow._redis.keys import Keys
    from tests.integration.redis_server import private_redis

    with private_redis(tmp_path / "redis") as port:
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=0.5"
        probe = redis.Redis(port=port)
        pid = int(probe.info()["process_id"])
        probe.hset(Keys(TEST_PREFIX).agents, "echo", "1")  # as a worker announces it
        app = Celery("producer", broker=url, backend=url, set_as_current=False)
        app.conf.broker_transport = "agentflow._redis.transport:Transport"
        settings = load_settings(broker={"url": url, "key_prefix": TEST_PREFIX})

        async def main() -> tuple[list[type], float, int]:
            async with AsyncClient(app=app, settings=settings) as client:
                await client.emit({"type": "t", "agent": "echo"})  # the connection is open
                os.kill(pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    outcomes = await asyncio.gather(
                        *(client.emit({"type": "t", "agent": "echo"}) for _ in range(20)),
                        return_exceptions=True,
                    )
                    took = time.monotonic() - started
                finally:
                    os.kill(pid, signal.SIGCONT)
                await client.emit_many([{"type": "t", "agent": "echo"} for _ in range(5)])
                queued = await client.redis.llen("agentflow.agent.echo")
            return [type(o) for o in outcomes], took, int(queued)

        kinds, took, queued = asyncio.run(main())
    # redis-py's errors for a lost connection: ConnectionError, or TimeoutError when the
    # last try could not open a new one.
    assert all(issubclass(k, RedisConnectionError | RedisTimeoutError) for k in kinds), kinds
    print(f"the emits failed after {took:.1f}s")
    assert took < 25, f"the emits took {took:.1f}s to fail"
    assert queued >= 6  # the first and the five after (a timed-out admission may have landed)
