"""Redis Streams between a writer and the event's producer: order, end, backpressure."""

from __future__ import annotations

import threading
import uuid

import pytest

from agentflow.errors import StreamFailed
from agentflow.streams import StreamWriter, iter_stream, stream_key
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.integration


def test_items_arrive_in_order_and_the_end_stops_the_reader(redis_client) -> None:
    event_id = uuid.uuid4().hex
    with StreamWriter(redis_client, event_id, prefix=TEST_PREFIX, batch_size=7) as writer:
        writer.extend({"k": k} for k in range(50))
    items = list(iter_stream(redis_client, event_id, prefix=TEST_PREFIX, timeout=5))
    assert items == [{"k": k} for k in range(50)]
    assert 0 < redis_client.ttl(stream_key(event_id, TEST_PREFIX)) <= 3600


def test_a_writer_error_reaches_the_reader(redis_client) -> None:
    event_id = uuid.uuid4().hex
    writer = StreamWriter(redis_client, event_id, prefix=TEST_PREFIX)
    writer.add("partial")
    writer.close(error="RuntimeError: upstream broke")
    reader = iter_stream(redis_client, event_id, prefix=TEST_PREFIX, timeout=5)
    assert next(reader) == "partial"
    with pytest.raises(StreamFailed, match="upstream broke"):
        next(reader)


def test_a_slow_reader_holds_the_writer_back(redis_client) -> None:
    """With a trimming reader, the stream never holds much more than the high-water mark."""
    event_id = uuid.uuid4().hex
    key = stream_key(event_id, TEST_PREFIX)
    longest = 0
    received: list[int] = []

    def read() -> None:
        nonlocal longest
        for item in iter_stream(redis_client, event_id, prefix=TEST_PREFIX, timeout=10,
                                count=50, trim=True):  # fmt: skip
            received.append(item)
            longest = max(longest, int(redis_client.xlen(key)))

    reader = threading.Thread(target=read)
    reader.start()
    with StreamWriter(redis_client, event_id, prefix=TEST_PREFIX, batch_size=100,
                      high_water=500, max_wait=10) as writer:  # fmt: skip
        writer.extend(range(5000))
    reader.join(20)
    assert received == list(range(5000))
    assert writer.waited > 0  # the writer did wait for the reader
    assert longest <= 500 + 100  # at most one batch past the high-water mark


def test_without_a_reader_the_writer_gives_up_waiting_and_keeps_everything(redis_client):
    event_id = uuid.uuid4().hex
    writer = StreamWriter(redis_client, event_id, prefix=TEST_PREFIX, batch_size=50,
                          high_water=100, max_wait=0.3)  # fmt: skip
    writer.extend(range(400))
    writer.close()
    assert 0.3 <= writer.waited < 5
    assert list(iter_stream(redis_client, event_id, prefix=TEST_PREFIX, timeout=5)) == list(
        range(400)
    )
