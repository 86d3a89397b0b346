"""Begin/finish script calls made in one loop turn share a pipeline, each with its own reply."""

from __future__ import annotations

import asyncio

import pytest
import redis

from agentflow.tasks.script_batch import ScriptBatch

pytestmark = pytest.mark.integration


def test_each_call_gets_its_own_reply_or_error(redis_client: redis.Redis) -> None:
    incr = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    fail = redis_client.register_script("return redis.error_reply('refused: ' .. ARGV[1])")

    async def scenario() -> list[object]:
        batch = ScriptBatch(redis_client)
        calls = [batch.call(incr, ["n"], [1]), batch.call(fail, [], ["no"]),
                 batch.call(incr, ["n"], [10])]  # fmt: skip
        return await asyncio.gather(*calls, return_exceptions=True)

    first, second, third = asyncio.run(scenario())
    assert (first, third) == (1, 11)
    assert isinstance(second, redis.ResponseError) and "refused: no" in str(second)


def test_a_script_redis_forgot_is_loaded_again(redis_client: redis.Redis) -> None:
    echo = redis_client.register_script("return ARGV[1]")
    redis_client.script_flush()  # what a restarted Redis looks like to a running worker

    async def scenario() -> list[object]:
        batch = ScriptBatch(redis_client)
        return await asyncio.gather(batch.call(echo, [], ["a"]), batch.call(echo, [], ["b"]))

    assert asyncio.run(scenario()) == [b"a", b"b"]
