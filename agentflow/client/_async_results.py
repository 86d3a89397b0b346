"""Waiting for results on asyncio: one pub/sub connection per client, for any number of
waiting coroutines.

The same protocol as :class:`~agentflow.client._results.ResultWaiter`, on redis-py's
asyncio client: the results callers start waiting for in one turn of the loop are
subscribed to with one SUBSCRIBE, then their keys read with one MGET (a result stored
before the subscription took effect is found there); one reader task resolves the callers'
futures as publications arrive (:class:`~agentflow._redis.subscription.Subscription`), and
the results resolved in one turn are unsubscribed with one command. Nothing is missed: a
sweep reads every pending key once a second, and after a lost connection the reader
subscribes again to everything pending and reads it. Once the Redis epoch changed (Redis
came back empty), a pending event that no worker lists as a survivor fails with
:class:`~agentflow.errors.ResultLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentflow.client._results import Wipes, ready_entry

log = logging.getLogger("agentflow.client._async_results")

_CHUNK = 500
"""Keys per SUBSCRIBE or MGET when many are pending at once."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncResultWaiter:
    """Resolves asyncio futures with result-backend entries (``{"status": ..., ...}``)."""

    def __init__(self, client: aredis.Redis, key_for: Callable[[str], str], epoch_key: str,
                 survivors_key: Callable[[str], str], sweep: float = 1.0,
                 epochs: aredis.Redis | None = None) -> None:  # fmt: skip
        self.redis = client
        self.epochs = epochs or client
        self.key_for = key_for
        self.epoch_key = epoch_key
        self.survivors_key = survivors_key
        self.sweep_interval = sweep
        self._prefix_len = len(key_for(""))
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._epochs: dict[str, str | None] = {}
        from agentflow._redis.subscription import Subscription  # on first use (see above)

        self._sub = Subscription(client, self._on_message)
        self._subscribed = asyncio.Event()
        """Set while the subscription has a connection (the reader waits for one)."""
        self._subscriber: asyncio.Task[None] | None = None
        self._to_subscribe: list[str] = []
        self._to_unsubscribe: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._wipes = Wipes()

    async def wait(self, task_id: str, timeout: float | None,
                   epoch: str | None = None) -> dict[str, Any]:  # fmt: skip
        """`task_id`'s result entry once it is ready; TimeoutError after `timeout`."""
        if self._closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        known = self._waiting.get(task_id)
        if known is None:
            self._waiting[task_id] = [fut]
            self._epochs[task_id] = epoch
            self._to_subscribe.append(task_id)
            if self._subscriber is None:
                self._subscriber = self._start(self._subscribe())
            if self._reader is None:
                self._reader = self._start(self._run())
                self._start(self._sweep())
        else:
            known.append(fut)
        # The future is this caller's own: a timer fails it at the deadline (cheaper than
        # wait_for's task and shield), and cancelling the caller cancels only it.
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except (TimeoutError, asyncio.CancelledError):
            self._forget(task_id, fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _start(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return task

    async def _subscribe(self) -> None:
        """Subscribe to what this turn's callers wait for, then read what is stored."""
        try:
            await asyncio.sleep(0)  # the rest of this turn's callers add theirs
            while self._to_subscribe and not self._closed:
                batch, self._to_subscribe = self._to_subscribe, []
                task_ids = [t for t in batch if t in self._waiting]
                if not task_ids:
                    continue
                if await self._sub.subscribe([self.key_for(t) for t in task_ids]):
                    # A new connection: the rest of what is pending too (it was lost).
                    taken = set(task_ids)
                    rest = [t for t in self._waiting if t not in taken]
                    await self._subscribe_all(rest)
                    task_ids += rest
                self._subscribed.set()
                await self._read(task_ids)
        except Exception as exc:
            # The reader subscribes again to all that is pending; the sweep reads it.
            log.warning("subscribing to results failed (%s); the reader retries", exc)
            self._subscribed.set()  # wake the reader: it sees no connection and retries
        finally:
            self._subscriber = None

    async def _subscribe_all(self, task_ids: list[str]) -> None:
        for i in range(0, len(task_ids), _CHUNK):
            await self._sub.subscribe([self.key_for(t) for t in task_ids[i : i + _CHUNK]])

    def _unsubscribe_later(self, key: str) -> None:
        """Unsubscribe from `key` with the others of this turn, in one command."""
        if not self._to_unsubscribe and not self._closed:
            asyncio.get_running_loop().call_soon(self._start, self._unsubscribe_resolved())
        self._to_unsubscribe.append(key)

    async def _unsubscribe_resolved(self) -> None:
        """One UNSUBSCRIBE for the results resolved since the last."""
        keys, self._to_unsubscribe = self._to_unsubscribe, []
        # Not one that a caller waits for again (it timed out, then was awaited anew).
        keys = [k for k in keys if k[self._prefix_len :] not in self._waiting]
        if keys and not self._closed:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                await self._sub.unsubscribe(keys)  # a lost connection unsubscribed them all

    def _forget(self, task_id: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        futures = self._waiting.get(task_id)
        if futures and fut in futures:
            futures.remove(fut)
            if not futures:
                del self._waiting[task_id]
                self._epochs.pop(task_id, None)
                self._unsubscribe_later(self.key_for(task_id))

    async def close(self) -> None:
        """Stop the reader and close the subscription; pending callers get an error."""
        self._closed = True
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(RuntimeError("the client was closed"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._sub.aclose()

    # -- the reader and the sweep ----------------------------------------------------------
    async def _run(self) -> None:
        """Pass on publications while subscribed; after a lost connection, subscribe again
        to everything pending and read it."""
        while not self._closed:
            try:
                if not self._sub.connected:
                    self._subscribed.clear()
                    if not self._waiting or self._subscriber is not None:
                        await self._subscribed.wait()
                        continue
                    pending = list(self._waiting)
                    await self._subscribe_all(pending)
                    self._subscribed.set()
                    await self._read(pending)
                await self._sub.read()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("result subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("result reader failed; going on")
                await asyncio.sleep(0.1)

    async def _sweep(self) -> None:
        """Once per interval: read every pending key, and fail what a Redis wipe lost."""
        while not self._closed:
            await asyncio.sleep(self.sweep_interval)
            if not self._waiting:
                continue
            try:
                await self._check_epoch()
                await self._read(list(self._waiting))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.debug("result sweep failed (%s); next time", exc)
            except Exception:
                log.exception("result sweep failed; going on")

    async def _read(self, task_ids: list[str]) -> None:
        """Resolve the given ids whose results are stored already."""
        for i in range(0, len(task_ids), _CHUNK):
            chunk = task_ids[i : i + _CHUNK]
            raws = await self.redis.mget([self.key_for(t) for t in chunk])
            for task_id, raw in zip(chunk, raws, strict=True):
                if raw is not None:
                    self._resolve(task_id, raw)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        self._resolve(channel[self._prefix_len :].decode(), data)

    def _resolve(self, task_id: str, raw: Any) -> None:
        if task_id not in self._waiting:
            return  # resolved already (by the read after subscribing, or the publication)
        meta = ready_entry(raw)
        if meta is None:
            return
        futures = self._waiting.pop(task_id)
        self._epochs.pop(task_id, None)
        for fut in futures:
            if not fut.done():
                fut.set_result(meta)
        self._unsubscribe_later(self.key_for(task_id))

    async def _check_epoch(self) -> None:
        """Fail the events a Redis that came back empty lost (see the module doc)."""
        raw = await self.epochs.get(self.epoch_key)
        current = raw.decode() if isinstance(raw, bytes) else None
        if current is None:
            return
        stale = self._wipes.stale(self._epochs, current)
        if not stale:
            return
        members = await cast(Any, self.epochs.smembers(self.survivors_key(current)))
        survivors = {m.decode() for m in members}
        for task_id in stale:
            if task_id in survivors:
                self._epochs[task_id] = current  # a worker holds it: it will finish
                continue
            if await self.redis.get(self.key_for(task_id)) is not None:
                continue  # finished after all: the read resolves it
            futures = self._waiting.pop(task_id, [])
            error = Wipes.lost(task_id, self._epochs.pop(task_id, None), current)
            for fut in futures:
                if not fut.done():
                    fut.set_exception(error)
