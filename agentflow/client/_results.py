"""Waiting for results: one thread and one pub/sub connection per client, for any number of
waiting threads.

Celery's Redis backend stores a task's result under ``celery-task-meta-<id>`` and publishes
it on the channel of that name. :class:`ResultWaiter` subscribes to the channels of the
results its callers wait for (in batches), then reads the keys once (a result stored before
the subscription took effect is found there), and resolves each caller's future when the
publication arrives. Nothing is missed: a sweep reads every pending key once a second, and
after a reconnect the subscriptions are renewed and the keys read again.

A producer may outlive the Redis it emitted to: :class:`ResultWaiter` compares the Redis
epoch (see :mod:`agentflow._worker.heartbeat`) with the one its events were emitted under;
once it changed, each pending event that no worker lists as a survivor fails with
:class:`~agentflow.errors.ResultLost` instead of waiting out its timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

import redis

from agentflow import _json
from agentflow.errors import ResultLost

log = logging.getLogger("agentflow.client._results")

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SURVIVOR_GRACE = 12.0
"""Seconds after noticing a wiped Redis before events no worker holds are reported lost
(workers list what they hold within one heartbeat)."""


def ready_entry(raw: Any) -> dict[str, Any] | None:
    """A result entry that says the task finished, else None (still pending, unreadable)."""
    try:
        meta = _json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(meta, dict) or meta.get("status") not in READY_STATES:
        return None
    return meta


class Wipes:
    """What a waiter knows of Redis epochs: which of its events were emitted under an
    earlier one, and when it is time to call those that no worker holds lost."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}

    def stale(self, epochs: dict[str, str | None], current: str) -> list[str]:
        """Events emitted under another epoch, once the survivors' grace has passed."""
        stale = [t for t, e in epochs.items() if e is not None and e != current]
        if not stale:
            return []
        first = self.first_seen.setdefault(current, time.monotonic())
        return stale if time.monotonic() - first >= SURVIVOR_GRACE else []

    @staticmethod
    def lost(task_id: str, old: str | None, current: str) -> ResultLost:
        """The error of an event Redis lost."""
        return ResultLost(task_id, f"Redis came back empty (epoch {old} -> {current}) after "
                          "this event was emitted, and no worker holds it: emit it again")  # fmt: skip


class ResultWaiter:
    """Resolves futures with result-backend entries (``{"status": ..., "result": ...}``)."""

    def __init__(self, client: redis.Redis, key_for: Callable[[str], str],
                 epoch_key: str, survivors_key: Callable[[str], str],
                 poll: float = 0.002, sweep: float = 1.0,
                 epochs: redis.Redis | None = None) -> None:  # fmt: skip
        self.redis = client
        self.epochs = epochs or client
        """Where the epoch and survivors live (AgentFlow's Redis, the broker's)."""
        self.key_for = key_for
        self.epoch_key = epoch_key
        self.survivors_key = survivors_key
        self.poll = poll
        self.sweep_interval = sweep
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Future[dict[str, Any]]]] = {}
        self._epochs: dict[str, str | None] = {}
        self._new: list[str] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wipes = Wipes()
        self.epoch: str | None = None

    # -- callers ---------------------------------------------------------------------------
    def future(self, task_id: str, epoch: str | None = None) -> Future[dict[str, Any]]:
        """A future resolved with `task_id`'s result entry once it is ready."""
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            known = self._waiting.get(task_id)
            if known is None:
                self._waiting[task_id] = [fut]
                self._epochs[task_id] = epoch
                self._new.append(task_id)
            else:
                known.append(fut)
            self._ensure_thread()
        self._wake.set()
        return fut

    def wait(self, task_id: str, timeout: float | None, epoch: str | None = None) -> dict[str, Any]:
        """Block until `task_id`'s result entry is ready; TimeoutError after `timeout`."""
        fut = self.future(task_id, epoch)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            self._forget(task_id, fut)
            raise TimeoutError(task_id) from None

    def _forget(self, task_id: str, fut: Future[dict[str, Any]]) -> None:
        with self._lock:
            futures = self._waiting.get(task_id)
            if futures and fut in futures:
                futures.remove(fut)
                if not futures:
                    del self._waiting[task_id]
                    self._epochs.pop(task_id, None)

    def close(self) -> None:
        """Stop the thread; pending callers get an error."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        self._wake.set()
        for futures in waiting.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(RuntimeError("the client was closed"))

    # -- the thread ------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="agentflow-results",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def _run(self) -> None:
        pubsub: Any = None
        last_sweep = time.monotonic()
        while not self._closed:
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    with self._lock:
                        self._new = list(self._waiting)
                    self._check_epoch()
                if not self._waiting:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                self._subscribe_new(pubsub)
                message = pubsub.get_message(timeout=self.poll)
                while message is not None:
                    self._on_message(pubsub, message)
                    message = pubsub.get_message(timeout=0)
                now = time.monotonic()
                if now - last_sweep >= self.sweep_interval:
                    last_sweep = now
                    self._check_epoch()
                    self._read(list(self._waiting), pubsub)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("result subscription lost (%s); reconnecting", exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                time.sleep(0.5)
            except Exception:
                log.exception("result waiter failed; going on")
                time.sleep(0.1)
        if pubsub is not None:
            pubsub.close()

    def _subscribe_new(self, pubsub: Any) -> None:
        with self._lock:
            new, self._new = self._new, []
        if not new:
            return
        pubsub.subscribe(*(self.key_for(t) for t in new))
        self._read(new, pubsub)

    def _read(self, task_ids: list[str], pubsub: Any) -> None:
        """Resolve the given ids whose results are stored already."""
        for i in range(0, len(task_ids), 500):
            chunk = task_ids[i : i + 500]
            raws = cast(list[Any], self.redis.mget([self.key_for(t) for t in chunk]))
            for task_id, raw in zip(chunk, raws, strict=True):
                if raw is not None:
                    self._resolve(pubsub, task_id, raw)

    def _on_message(self, pubsub: Any, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        task_id = channel[len(self.key_for("")) :]
        self._resolve(pubsub, task_id, message["data"])

    def _resolve(self, pubsub: Any, task_id: str, raw: Any) -> None:
        meta = ready_entry(raw)
        if meta is None:
            return
        with self._lock:
            futures = self._waiting.pop(task_id, [])
            self._epochs.pop(task_id, None)
        if futures:
            pubsub.unsubscribe(self.key_for(task_id))
        for fut in futures:
            if not fut.done():
                fut.set_result(meta)

    # -- a Redis that came back empty ------------------------------------------------------
    def _check_epoch(self) -> None:
        raw = self.epochs.get(self.epoch_key)
        current = raw.decode() if isinstance(raw, bytes) else None
        if current is None:
            return  # no worker has looked yet
        if self.epoch is None:
            self.epoch = current
        with self._lock:
            stale = self._wipes.stale(dict(self._epochs), current)
        if not stale:
            return
        members = cast(set[bytes], self.epochs.smembers(self.survivors_key(current)))
        survivors = {m.decode() for m in members}
        for task_id in stale:
            if task_id in survivors:
                with self._lock:
                    self._epochs[task_id] = current  # a worker holds it: it will finish
                continue
            raw_meta = self.redis.get(self.key_for(task_id))
            if raw_meta is not None:
                continue  # finished after all: the read resolves it
            with self._lock:
                futures = self._waiting.pop(task_id, [])
                old = self._epochs.pop(task_id, None)
            error = Wipes.lost(task_id, old, current)
            for fut in futures:
                if not fut.done():
                    fut.set_exception(error)
