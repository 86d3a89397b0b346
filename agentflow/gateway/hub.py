"""One XREAD for every open SSE stream: the gateway's reader of event streams.

Each SSE response subscribes to its event's Redis stream (``<prefix>:stream:<id>``) from
the id it resumes after. The hub's loop issues one blocking ``XREAD`` over all subscribed
streams (on a connection of its own) and hands each subscriber the entries after its own
cursor, so a thousand open streams cost one Redis connection and one command at a time,
not a thousand. A stream subscribed while the hub blocks is read when that XREAD returns
(within `block_ms`). XREADs start at most every `min_interval` seconds (10 ms): with a
thousand streams each XREAD names a thousand keys, so the items of several writes are read
in one call rather than one call per item. The hub never trims: every reader, and every resume, sees the whole
stream until it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import redis.asyncio as aredis

log = logging.getLogger("agentflow.gateway.hub")

Entry = tuple[bytes, dict[bytes, bytes]]


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable pair; ValueError for anything else."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if not ms.isdigit() or not (seq.isdigit() or seq == ""):
        raise ValueError(f"not a stream entry id: {text!r}")
    return int(ms), int(seq or 0)


class Subscription:
    """One reader of one stream: batches of entries arrive on `queue`."""

    __slots__ = ("after", "key", "queue")

    def __init__(self, key: str, after: bytes) -> None:
        self.key = key
        self.after = parse_id(after)
        self.queue: asyncio.Queue[list[Entry] | None] = asyncio.Queue()


class StreamHub:
    """Reads every subscribed stream with one XREAD at a time (see the module doc)."""

    def __init__(self, client: aredis.Redis, block_ms: int = 100, count: int = 200,
                 min_interval: float = 0.01) -> None:  # fmt: skip
        self.redis = client
        self.block_ms = block_ms
        self.count = count
        self.min_interval = min_interval
        self._subs: dict[str, list[Subscription]] = {}
        self._cursor: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscribe(self, key: str, after: bytes = b"0-0") -> Subscription:
        """Start reading `key` after entry id `after`."""
        sub = Subscription(key, after)
        subs = self._subs.setdefault(key, [])
        subs.append(sub)
        cursor = self._cursor.get(key)
        if cursor is None or parse_id(cursor) > sub.after:
            self._cursor[key] = after
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` (idempotent)."""
        subs = self._subs.get(sub.key)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.key]
                self._cursor.pop(sub.key, None)

    def start(self) -> None:
        """Run the reader loop on the current event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the reader loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            if not self._subs:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = last + self.min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            last = loop.time()
            streams: dict[Any, Any] = dict(self._cursor)
            try:
                reply = cast(list[Any], await self.redis.xread(
                    streams, count=self.count, block=self.block_ms))  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading event streams failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for raw_key, entries in reply or ():
                self._deliver(raw_key.decode() if isinstance(raw_key, bytes) else raw_key,
                              entries)  # fmt: skip

    def _deliver(self, key: str, entries: list[Entry]) -> None:
        subs = self._subs.get(key)
        if not subs or not entries:
            return
        self._cursor[key] = entries[-1][0]
        ids = [parse_id(e[0]) for e in entries]
        for sub in subs:
            if ids[0] > sub.after:
                batch = entries
            else:
                batch = [e for e, i in zip(entries, ids, strict=True) if i > sub.after]
            if batch:
                sub.after = ids[-1]
                sub.queue.put_nowait(batch)
