"""Waiting for results on asyncio: one pub/sub connection per client, for any number of
waiting coroutines.

The same protocol as :class:`~agentflow.client._results.ResultWaiter`, on redis-py's
asyncio client: the results callers start waiting for in one turn of the loop are
subscribed to with one SUBSCRIBE, then their keys read with one MGET (a result stored
before the subscription took effect is found there); one reader task resolves the callers'
futures as publications arrive, and unsubscribes what it resolved in one command. Nothing is missed: the reader reads every pending
key once a second, and redis-py renews the subscriptions after a reconnect. Once the Redis
epoch changed (Redis came back empty), a pending event that no worker lists as a survivor
fails with :class:`~agentflow.errors.ResultLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentflow.client._results import Wipes, ready_entry

log = logging.getLogger("agentflow.client._async_results")


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
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._subscriber: asyncio.Task[None] | None = None
        self._to_subscribe: list[str] = []
        self._to_unsubscribe: list[str] = []
        self._resubscribe = False
        self._commands = asyncio.Lock()
        """One SUBSCRIBE or UNSUBSCRIBE at a time (the first one opens the connection)."""
        self._closed = False
        self._wipes = Wipes()

    async def wait(self, task_id: str, timeout: float | None,
                   epoch: str | None = None) -> dict[str, Any]:  # fmt: skip
        """`task_id`'s result entry once it is ready; TimeoutError after `timeout`."""
        if self._closed:
            raise RuntimeError("the client is closed")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        known = self._waiting.get(task_id)
        if known is None:
            self._waiting[task_id] = [fut]
            self._epochs[task_id] = epoch
            self._to_subscribe.append(task_id)
            if self._subscriber is None:
                self._subscriber = asyncio.get_running_loop().create_task(self._subscribe())
        else:
            known.append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._forget(task_id, fut)
            raise

    async def _subscribe(self) -> None:
        """Subscribe to what this turn's callers wait for, then read what is stored."""
        try:
            await asyncio.sleep(0)  # the rest of this turn's callers add theirs
            while self._to_subscribe and not self._closed:
                batch, self._to_subscribe = self._to_subscribe, []
                task_ids = [t for t in batch if t in self._waiting]
                if not task_ids:
                    continue
                if self._pubsub is None:
                    self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                async with self._commands:
                    await self._pubsub.subscribe(*(self.key_for(t) for t in task_ids))
                self._subscribed.set()
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.get_running_loop().create_task(self._run())
                await self._read(task_ids)
                await self._unsubscribe_resolved()
        except Exception as exc:
            # The reader's sweep reads every pending key, and subscribes again, from now on.
            log.warning("subscribing to results failed (%s); the reader retries", exc)
            self._resubscribe = True
            self._subscribed.set()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._run())
        finally:
            self._subscriber = None

    async def _unsubscribe_resolved(self) -> None:
        """One UNSUBSCRIBE for the results resolved since the last."""
        if not self._to_unsubscribe or self._pubsub is None:
            return
        keys, self._to_unsubscribe = self._to_unsubscribe, []
        # Not one that a caller waits for again (it timed out, then was awaited anew).
        keys = [k for k in keys if k[self._prefix_len :] not in self._waiting]
        if keys:
            async with self._commands:
                await self._pubsub.unsubscribe(*keys)

    def _forget(self, task_id: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        futures = self._waiting.get(task_id)
        if futures and fut in futures:
            futures.remove(fut)
            if not futures:
                del self._waiting[task_id]
                self._epochs.pop(task_id, None)
                self._to_unsubscribe.append(self.key_for(task_id))

    async def close(self) -> None:
        """Stop the reader and close the subscription; pending callers get an error."""
        self._closed = True
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(RuntimeError("the client was closed"))
        for task in (self._subscriber, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    # -- the reader ------------------------------------------------------------------------
    async def _run(self) -> None:
        last_sweep = time.monotonic()
        while not self._closed:
            try:
                if not self._waiting:
                    self._subscribed.clear()
                    await self._subscribed.wait()
                    continue
                timeout = max(0.0, self.sweep_interval - (time.monotonic() - last_sweep))
                if self._pubsub is not None and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(timeout=timeout)
                    while message is not None:
                        self._on_message(message)
                        message = await self._pubsub.get_message(timeout=0)
                    await self._unsubscribe_resolved()
                else:
                    await asyncio.sleep(timeout)
                if time.monotonic() - last_sweep >= self.sweep_interval:
                    last_sweep = time.monotonic()
                    await self._check_epoch()
                    await self._read(list(self._waiting))
                    await self._unsubscribe_resolved()
                    if self._resubscribe and self._subscriber is None:
                        self._resubscribe = False
                        self._to_subscribe.extend(self._waiting)
                        self._subscriber = asyncio.get_running_loop().create_task(self._subscribe())
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("result subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
                await self._read(list(self._waiting), quiet=True)
            except Exception:
                log.exception("result reader failed; going on")
                await asyncio.sleep(0.1)

    async def _read(self, task_ids: list[str], quiet: bool = False) -> None:
        """Resolve the given ids whose results are stored already."""
        try:
            for i in range(0, len(task_ids), 500):
                chunk = task_ids[i : i + 500]
                raws = await self.redis.mget([self.key_for(t) for t in chunk])
                for task_id, raw in zip(chunk, raws, strict=True):
                    if raw is not None:
                        self._resolve(task_id, raw)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if not quiet:
                raise

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        self._resolve(channel[self._prefix_len :], message["data"])

    def _resolve(self, task_id: str, raw: Any) -> None:
        meta = ready_entry(raw)
        if meta is None:
            return
        futures = self._waiting.pop(task_id, [])
        self._epochs.pop(task_id, None)
        for fut in futures:
            if not fut.done():
                fut.set_result(meta)
        if futures:
            self._to_unsubscribe.append(self.key_for(task_id))

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
