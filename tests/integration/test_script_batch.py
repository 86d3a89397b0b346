"""Begin/finish script calls made in one loop turn share a pipeline, each with its own reply."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agentflow._redis.script_batch import ScriptBatch

pytestmark = pytest.mark.integration


def async_twin(client: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client on the same server and database as `client`."""
    kw = client.connection_pool.connection_kwargs
    return redis.asyncio.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379),
                               db=kw.get("db", 0))  # fmt: skip


def test_each_call_gets_its_own_reply_or_error(redis_client: redis.Redis) -> None:
    incr = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    fail = redis_client.register_script("return redis.error_reply('refused: ' .. ARGV[1])")
    for script in (incr, fail):  # loaded: the batch runs in order, GET last
        redis_client.script_load(script.script)

    async def scenario() -> list[object]:
        client = async_twin(redis_client)
        batch = ScriptBatch(client)
        calls = [batch.call(incr, ["n"], [1]), batch.call(fail, [], ["no"]),
                 batch.call(incr, ["n"], [10]), batch.command("GET", "n")]  # fmt: skip
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.aclose()

    first, second, third, read = asyncio.run(scenario())
    assert (first, third) == (1, 11)
    assert isinstance(second, redis.ResponseError) and "refused: no" in str(second)
    assert read == b"11"


def test_a_script_redis_forgot_is_loaded_again(redis_client: redis.Redis) -> None:
    echo = redis_client.register_script("return ARGV[1]")
    redis_client.script_flush()  # what a restarted Redis looks like to a running worker

    async def scenario() -> list[object]:
        client = async_twin(redis_client)
        batch = ScriptBatch(client)
        try:
            return await asyncio.gather(batch.call(echo, [], ["a"]), batch.call(echo, [], ["b"]))
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [b"a", b"b"]


def test_when_redis_cannot_be_reached_every_caller_gets_the_error(
    redis_client: redis.Redis,
) -> None:
    """No caller is left waiting: the events fail (and are redelivered later)."""
    import socket

    echo = redis_client.register_script("return ARGV[1]")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the block ends

    async def scenario() -> list[object]:
        # No reconnect attempts (redis-py's default retries with backoff for seconds).
        client = redis.asyncio.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
        batch = ScriptBatch(client)
        try:
            calls = [batch.call(echo, [], ["a"]), batch.command("GET", "k")]
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        finally:
            await client.aclose()

    results = asyncio.run(scenario())
    assert len(results) == 2 and all(isinstance(r, redis.ConnectionError) for r in results)


def test_agentflow_async_client_packs_with_hiredis_and_round_trips(
    redis_client: redis.Redis,
) -> None:
    """The process's asyncio client (hiredis packing) runs scripts, pipelines and binary
    values exactly as redis-py's own packer would."""
    from agentflow._redis import connection
    from agentflow._redis._packing import HiredisPacking

    blob = bytes(range(256)) * 400

    async def scenario() -> list[object]:
        client = connection.get_async_redis()
        try:
            assert issubclass(client.connection_pool.connection_class, HiredisPacking)
            pipe = client.pipeline(transaction=False)
            pipe.set("blob", blob)
            pipe.get("blob")
            pipe.set("f", 0.1)
            pipe.get("f")
            pipe.eval("return ARGV[1] .. KEYS[1]", 1, "k", "v:")
            return list(await pipe.execute())
        finally:
            await client.aclose()
            connection.reset()

    assert asyncio.run(scenario()) == [True, blob, True, b"0.1", b"v:k"]


def test_a_fan_out_transaction_rides_the_batch_connection_among_other_calls(
    redis_client: redis.Redis,
) -> None:
    """A fan-out's MULTI/EXEC goes out on the batch's connection between other calls: its
    messages and its other commands land together, the calls around it get their own
    replies, and an error inside it is raised to the fan-out (never reported as sent)."""
    from agentflow._redis import publish

    def outgoing(queue: str, item: str) -> publish.Outgoing:
        return publish.Outgoing(queue, item, "agentflow.run_tool", {}, ((), {}, {}))

    redis_client.set("not-a-list", "x")

    async def scenario() -> tuple[object, ...]:
        client = async_twin(redis_client)
        batch = ScriptBatch(client)
        try:
            pipe = client.pipeline(transaction=True)
            pipe.set("chord-size", 2, ex=60)
            before = batch.command("INCR", "around")
            sent = publish.push_atomically(batch.shared, pipe,
                                           [outgoing("tools", "a"), outgoing("tools", "b")])  # fmt: skip
            after = batch.command("INCR", "around")
            results = await asyncio.gather(before, sent, after)
            bad = client.pipeline(transaction=True)
            bad.lpush("not-a-list", "z")  # WRONGTYPE when EXEC runs it
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await publish.push_atomically(batch.shared, bad, [outgoing("tools", "c")])
            return tuple(results)
        finally:
            await batch.aclose()
            await client.aclose()

    assert asyncio.run(scenario()) == (1, None, 2)
    assert redis_client.lrange("tools", 0, -1) == [b"c", b"b", b"a"]  # EXEC runs the rest
    assert redis_client.get("chord-size") == b"2" and 0 < redis_client.ttl("chord-size") <= 60


_BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


def test_a_fan_out_whose_reply_comes_late_is_not_sent_a_second_time(
    redis_client: redis.Redis,
) -> None:
    """Redis stalls past the connection's reply timeout while a fan-out's transaction waits
    in its input: the call fails (its message goes back to the queue; the transaction
    settles it when it runs), and the transaction is not sent again on a new connection,
    where it would push its tool calls a second time."""
    from agentflow._redis import publish
    from agentflow._redis.shared_connection import SharedConnection

    kw = redis_client.connection_pool.connection_kwargs

    async def scenario() -> None:
        client = redis.asyncio.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379),
                                     db=kw.get("db", 0), socket_timeout=0.5)  # fmt: skip
        shared = SharedConnection(client)
        await shared.execute([("PING",)])  # connected before Redis stalls
        try:
            stall = asyncio.create_task(asyncio.to_thread(redis_client.eval, _BUSY, 0, 2_000_000))
            await asyncio.sleep(0.2)  # the script is running: Redis answers nobody
            pipe = client.pipeline(transaction=True)
            message = publish.Outgoing("late-tools", "a", "agentflow.run_tool", {}, ((), {}, {}))
            with pytest.raises(redis.ConnectionError):
                await publish.push_atomically(shared, pipe, [message])
            await stall
        finally:
            await shared.aclose()
            await client.aclose()

    asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while not redis_client.llen("late-tools") and time.monotonic() < deadline:
        time.sleep(0.05)  # the stalled connection's transaction runs once Redis is back
    time.sleep(0.3)
    assert redis_client.lrange("late-tools", 0, -1) == [b"a"]
