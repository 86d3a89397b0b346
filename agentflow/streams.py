"""Per-event Redis Streams: what an event streams while it runs reaches its producer.

An event's stream is the Redis Stream ``<prefix>:stream:<event_id>``. Writers (the LLM
layer's token streaming, streaming tools, agents) append JSON items with ``XADD``; the
stream ends with an entry carrying ``end`` (and ``error`` when the writer failed). Readers
(:meth:`agentflow.EventHandle.stream`, :func:`iter_stream`) block on ``XREAD`` from the
start of the stream, so a reader that starts late still sees every item, in order.

Every stream expires `ttl` seconds after its last write; its length is capped (approximate
``MAXLEN``) so that a runaway writer cannot fill Redis.

Backpressure: a reader that passes ``trim=True`` (``handle.stream()`` does) trims what it has
read (``XTRIM MINID``), so the stream's length is what is still unread. A writer whose stream
holds more than `high_water` entries waits (up to `max_wait` seconds, then goes on, logging
once) until the reader has caught up below half of it. Without a reader nothing is trimmed
until the stream expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import redis
import redis.asyncio as aredis

from agentflow.errors import EventCancelled, StreamFailed

DEFAULT_TTL = 3600
DEFAULT_MAXLEN = 1_000_000
DEFAULT_HIGH_WATER = 20_000
DEFAULT_MAX_WAIT = 30.0
log = logging.getLogger("agentflow.streams")
_END = b"end"
_CANCELLED = "cancelled"
_ITEM = b"d"


def stream_key(event_id: str, prefix: str | None = None) -> str:
    """The Redis key of the stream of `event_id`."""
    if prefix is None:
        from agentflow.config import get_settings

        prefix = get_settings().broker.key_prefix
    return f"{prefix}:stream:{event_id}"


def _encode(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), default=str)


class _Writer:
    """What both writers share: the key, the batch buffer, the end entry, the pipeline."""

    def __init__(
        self,
        client: Any,
        event_id: str,
        *,
        prefix: str | None = None,
        batch_size: int = 100,
        ttl: int = DEFAULT_TTL,
        maxlen: int = DEFAULT_MAXLEN,
        high_water: int = DEFAULT_HIGH_WATER,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.redis = client
        self.key = stream_key(event_id, prefix)
        self.batch_size = max(1, batch_size)
        self.ttl = ttl
        self.maxlen = maxlen
        self.high_water = high_water
        self.max_wait = max_wait
        self.waited = 0.0
        """Seconds spent waiting for the reader (backpressure)."""
        self.count = 0
        self.closed = False
        self._buffer: list[str] = []
        self._no_reader = False

    def _queue(self, item: Any) -> bool:
        """Buffer one item; True when the batch is full."""
        self._buffer.append(_encode(item))
        return len(self._buffer) >= self.batch_size

    @staticmethod
    def _end(error: str | None) -> dict[Any, Any]:
        end: dict[Any, Any] = {_END: b"1"}
        if error:
            end[b"error"] = error.encode()
        return end

    def _pipeline(self, end: dict[Any, Any]) -> Any:
        """A pipeline that adds the buffered items (and `end`), refreshes the TTL, asks XLEN."""
        pipe = self.redis.pipeline(transaction=False)
        for encoded in self._buffer:
            pipe.xadd(self.key, {_ITEM: encoded}, maxlen=self.maxlen, approximate=True)
        if end:
            pipe.xadd(self.key, end, maxlen=self.maxlen, approximate=True)
        pipe.expire(self.key, self.ttl)
        pipe.xlen(self.key)
        return pipe

    def _sent(self, length: int, end: dict[Any, Any]) -> bool:
        """Account for a sent batch; True when the writer should wait for the reader."""
        self.count += len(self._buffer)
        self._buffer.clear()
        return length > self.high_water and not end and not self._no_reader

    def _gave_up(self, started: float) -> bool:
        if time.monotonic() - started <= self.max_wait:
            return False
        self._no_reader = True
        log.warning("stream %s: no reader caught up in %.0fs; writing on", self.key,
                    self.max_wait)  # fmt: skip
        return True


class StreamWriter(_Writer):
    """Append items to an event's stream from synchronous code (tools, sync agents).

    Items are buffered and sent ``batch_size`` at a time in one pipeline; :meth:`flush`
    sends what is buffered, :meth:`close` sends it and ends the stream.
    """

    def add(self, item: Any) -> None:
        """Queue one JSON-serialisable item; sent once the batch is full."""
        if self._queue(item):
            self.flush()

    def extend(self, items: Any) -> None:
        """Queue many items."""
        for item in items:
            self.add(item)

    def flush(self) -> None:
        """Send the buffered items."""
        self._send({})

    def close(self, error: str | None = None) -> None:
        """Send the buffered items and end the stream (with `error` if the writer failed)."""
        if not self.closed:
            self._send(self._end(error))
            self.closed = True

    def _send(self, end: dict[Any, Any]) -> None:
        if not self._buffer and not end:
            return
        length = int(self._pipeline(end).execute()[-1])
        if self._sent(length, end):
            started = time.monotonic()
            delay = 0.001
            while int(self.redis.xlen(self.key)) > self.high_water // 2:
                if self._gave_up(started):
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            self.waited += time.monotonic() - started

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(error=f"{type(exc).__name__}: {exc}" if exc is not None else None)


class AsyncStreamWriter(_Writer):
    """:class:`StreamWriter` for code running on an asyncio loop (the LLM layer, tools)."""

    def __init__(self, client: aredis.Redis, event_id: str, *, batch_size: int = 1,
                 **options: Any) -> None:  # fmt: skip
        super().__init__(client, event_id, batch_size=batch_size, **options)

    async def add(self, item: Any) -> None:
        """Queue one item; sent once the batch is full."""
        if self._queue(item):
            await self.flush()

    async def flush(self) -> None:
        """Send the buffered items."""
        await self._send({})

    async def close(self, error: str | None = None) -> None:
        """Send the buffered items and end the stream."""
        if not self.closed:
            await self._send(self._end(error))
            self.closed = True

    async def _send(self, end: dict[Any, Any]) -> None:
        if not self._buffer and not end:
            return
        length = int((await self._pipeline(end).execute())[-1])
        if self._sent(length, end):
            started = time.monotonic()
            delay = 0.001
            while int(await self.redis.xlen(self.key)) > self.high_water // 2:
                if self._gave_up(started):
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            self.waited += time.monotonic() - started


def _decode(reply: list[Any], last_id: bytes) -> tuple[list[Any], bytes, bool, str | None]:
    """Items of an XREAD reply up to the end entry: (items, last id, ended, writer's error)."""
    items: list[Any] = []
    for _key, entries in reply:
        for entry_id, fields in entries:
            last_id = entry_id
            if _END in fields:
                if fields.get(b"cancelled"):
                    return items, last_id, True, _CANCELLED
                error = fields.get(b"error")
                return items, last_id, True, error.decode(errors="replace") if error else None
            items.append(json.loads(fields[_ITEM]))
    return items, last_id, False, None


def _over(event_id: str, read: bool, ended: bool, error: str | None, finished: bool,
          quiet_since: float, timeout: float | None) -> bool:  # fmt: skip
    """After a read: True when the stream is over; raises for a failed or cancelled one, or
    one quiet for longer than `timeout`."""
    if error is _CANCELLED:
        raise EventCancelled(event_id, "cancelled while it streamed")
    if error is not None:
        raise StreamFailed(error)
    if ended or (finished and not read):
        return True
    if timeout is not None and time.monotonic() - quiet_since > timeout:
        raise TimeoutError(f"no item on the stream of event {event_id} for {timeout:g}s")
    return False


def iter_stream(
    client: redis.Redis,
    event_id: str,
    *,
    prefix: str | None = None,
    timeout: float | None = 60.0,
    done: Callable[[], bool] | None = None,
    block_ms: int = 500,
    count: int = 1000,
    trim: bool = False,
) -> Iterator[Any]:
    """Yield the items of an event's stream in order until it ends.

    Stops at the end entry (raising :class:`StreamFailed` if it carries an error, or
    :class:`EventCancelled` if the event was cancelled), or when
    `done()` turns true and the stream holds nothing more (the event finished without
    streaming), or raises :class:`TimeoutError` after `timeout` seconds without an item.
    With `trim`, entries already read are trimmed after each read (a single reader; this is
    what lets a writer's backpressure see how far behind the reader is).
    """
    key = stream_key(event_id, prefix)
    last_id = b"0-0"
    quiet_since = time.monotonic()
    while True:
        reply = cast(list[Any], client.xread({key: last_id}, count=count, block=block_ms))
        finished = False
        if reply:
            quiet_since = time.monotonic()
            if trim:
                client.xtrim(key, minid=reply[-1][1][-1][0], approximate=False)
        elif done is not None and done():
            # Finished: whatever it wrote is in the stream by now; drain and stop.
            reply = cast(list[Any], client.xread({key: last_id}, count=count)) or []
            finished = True
        items, last_id, ended, error = _decode(reply, last_id)
        yield from items
        if _over(event_id, bool(items), ended, error, finished, quiet_since, timeout):
            return


async def aiter_stream(
    client: aredis.Redis,
    event_id: str,
    *,
    prefix: str | None = None,
    timeout: float | None = 60.0,
    done: Callable[[], Awaitable[bool]] | None = None,
    block_ms: int = 500,
    count: int = 1000,
    trim: bool = False,
) -> AsyncIterator[Any]:
    """:func:`iter_stream` on an asyncio client (`done` is a coroutine function)."""
    key = stream_key(event_id, prefix)
    last_id = b"0-0"
    quiet_since = time.monotonic()
    while True:
        reply = cast(list[Any], await client.xread({key: last_id}, count=count, block=block_ms))
        finished = False
        if reply:
            quiet_since = time.monotonic()
            if trim:
                await client.xtrim(key, minid=reply[-1][1][-1][0], approximate=False)
        elif done is not None and await done():
            reply = cast(list[Any], await client.xread({key: last_id}, count=count)) or []
            finished = True
        items, last_id, ended, error = _decode(reply, last_id)
        for item in items:
            yield item
        if _over(event_id, bool(items), ended, error, finished, quiet_since, timeout):
            return


async def end_cancelled(client: aredis.Redis, event_id: str, prefix: str | None = None) -> None:
    """End an event's stream, if it has one, with a cancelled marker (readers raise
    :class:`~agentflow.errors.EventCancelled`)."""
    key = stream_key(event_id, prefix)
    if await client.exists(key):
        await client.xadd(key, {_END: b"1", b"cancelled": b"1"})
