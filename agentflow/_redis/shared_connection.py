"""One Redis connection that all coroutines of a loop use at once (pipelining across callers).

Redis answers the commands of one connection in the order they were sent. So callers on one
event loop can share a connection without taking turns: each call's commands go out as they
come (those of one loop turn in one write), and one reader task hands the replies back in
that order. A call costs a future, a share of one write and of one read, against a redis-py
pipeline per call: a pooled connection taken and given back under a timeout, a command
stack, a retry wrapper and a write and read of its own (measured: a third of
:class:`~agentflow.client.AsyncClient`'s CPU per event; docs/internals.md).

Failure is all or nothing, as on any connection: when the connection breaks, or a reply is
late by more than the connection's ``socket_timeout`` (else :data:`REPLY_TIMEOUT` seconds:
a half-open socket, a stopped Redis), every call in flight fails with a ``ConnectionError``,
and the next call opens a new connection (giving up on opening after as long). The connection
comes from the client's own pool (TLS, AUTH, the database and Sentinel's current master
included), and goes back to it on :meth:`SharedConnection.aclose`.

With ``[broker] wait_replicas`` each write ends with one ``WAIT`` and its calls' replies are
held until it answers: a group commit, so the writes of a turn wait for one replica round
trip together instead of each queueing its own WAIT behind the others on the connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentflow._redis.replication import ReplicaWait

REPLY_TIMEOUT = 30.0
"""Seconds the oldest call in flight waits for its replies before the connection is dropped,
when the client's connections set no ``socket_timeout``."""


class SharedConnection:
    """Runs command lists for any number of coroutines of one loop on one connection of
    `client`'s pool; each call gets its own replies (an error reply in place, as a
    ``ResponseError`` instance, like ``pipeline.execute(raise_on_error=False)``)."""

    def __init__(self, client: aredis.Redis, wait: ReplicaWait | None = None,
                 what: str = "write") -> None:  # fmt: skip
        self.client = client
        self.wait = wait
        """``[broker] wait_replicas``: each write ends with one WAIT, and its calls' replies
        are handed out once the WAIT answered (its replicas have them, or it timed out)."""
        self.what = what
        """What the writes are, for the unconfirmed-replication warning."""
        kwargs = client.connection_pool.connection_kwargs
        self.reply_timeout = float(kwargs.get("socket_timeout") or REPLY_TIMEOUT)
        """Seconds a reply may be late before the connection counts as lost."""
        self._retry = client.get_retry() or Retry(ExponentialWithJitterBackoff(1, 10), 3)
        self._conn: Any = None
        self._opening: asyncio.Task[Any] | None = None
        self._outbox: list[tuple[bytes, int, asyncio.Future[list[Any]]]] = []
        self._in_flight: collections.deque[_Sent] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        """The reader, the watchdog and writes under way (the loop holds tasks weakly)."""
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send `commands` (each a command and its arguments); their replies, in order.
        A lost connection is retried on the client's redis-py ``Retry`` (by default three
        more tries, with backoff), on a new connection; then the ``ConnectionError`` (or
        ``TimeoutError``) is raised. A retried call may have run once already, as with
        redis-py's own retries."""
        return await self._retry.call_with_retry(lambda: self._execute(commands), _no_undo)

    async def execute_once(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """:meth:`execute` without the retry: for commands that must not run twice. A reply
        that came too late (``reply_timeout``, a WAIT for a missing replica) fails the call
        with ``ConnectionError`` although Redis may have run the commands; a retry would
        run them again."""
        return await self._execute(commands)

    async def _execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if self._closed:
            raise RedisConnectionError("the shared connection is closed")
        conn = self._conn
        if conn is None:
            conn = await self._open()
        packed = conn.pack_commands(commands)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush, conn)
        self._outbox.append((b"".join(packed), len(commands), future))
        return await future

    async def _open(self) -> Any:
        """The connection, opened once for all callers that need it now: when opening
        fails, they all get that error (and may retry), rather than each trying in turn."""
        if self._opening is None:
            self._opening = opening = asyncio.get_running_loop().create_task(self._connect())
            opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Task[Any]) -> None:
        self._opening = None
        if not opening.cancelled():
            opening.exception()  # retrieved here too, in case every caller was cancelled

    async def _connect(self) -> Any:
        try:
            async with asyncio.timeout(self.reply_timeout):
                conn = await self.client.connection_pool.get_connection()
        except TimeoutError:
            raise RedisTimeoutError(
                f"no connection to Redis within {self.reply_timeout:g}s"
            ) from None
        if self._closed:
            await self.client.connection_pool.release(conn)
            raise RedisConnectionError("the shared connection is closed")
        self._conn = conn
        self._start(self._read(conn))
        self._watcher = self._start(self._watch(conn))
        return conn

    def _start(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _flush(self, conn: Any) -> None:
        """Write this turn's calls in one write, and queue them for their replies."""
        outbox, self._outbox = self._outbox, []
        if conn is not self._conn:  # it broke since: fail them, the caller may retry
            _fail([f for *_, f in outbox], RedisConnectionError("Redis connection lost"))
            return
        now = time.monotonic()
        wait = self.wait.command() if self.wait is not None else None
        held: list[tuple[asyncio.Future[list[Any]], list[Any]]] | None = (
            None if wait is None else []
        )
        data = [packed for packed, _, _ in outbox]
        for _, count, future in outbox:
            self._in_flight.append(_Sent(count, future, now, held))
        if wait is not None:  # one WAIT covers every write before it on this connection
            data.append(conn.pack_command(*wait)[0])
            self._in_flight.append(_Sent(1, None, now, held))
        # Writes go out in the order of the turns (tasks start in the order they are made).
        self._start(self._write(conn, b"".join(data)))

    async def _write(self, conn: Any, data: bytes) -> None:
        if conn is not self._conn or not conn.is_connected:  # a reconnect would lose order
            self._broken(conn, RedisConnectionError("Redis connection lost"))
            return
        try:
            await conn.send_packed_command(data, check_health=False)
        except Exception as exc:
            self._broken(conn, exc)

    async def _read(self, conn: Any) -> None:
        """Hand each call its replies, in the order the calls were sent."""
        replies: list[Any] = []
        try:
            while True:
                try:
                    reply = await conn.read_response(disconnect_on_error=False)
                except ResponseError as exc:  # an error reply: the call's, not the connection's
                    reply = exc
                except RedisTimeoutError:  # the socket_timeout passed: idle, or late (_watch)
                    continue
                if not self._in_flight:
                    raise RedisConnectionError("Redis sent a reply nobody asked for")
                replies.append(reply)
                sent = self._in_flight[0]
                if len(replies) == sent.count:
                    self._in_flight.popleft()
                    self._answered(sent, replies)
                    replies = []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._broken(conn, exc)

    def _answered(self, sent: _Sent, replies: list[Any]) -> None:
        """A call's replies are all in: hand them over, or hold them for the write's WAIT."""
        if sent.future is None:  # the WAIT: its write's calls are answered now
            if self.wait is not None:
                self.wait.check(replies[0], self.what)
            for future, held in sent.held or ():
                if not future.done():
                    future.set_result(held)
        elif sent.held is not None:
            sent.held.append((sent.future, replies))
        elif not sent.future.done():
            sent.future.set_result(replies)

    async def _watch(self, conn: Any) -> None:
        """Drop the connection when its oldest call waited more than `reply_timeout`."""
        while conn is self._conn:
            await asyncio.sleep(self.reply_timeout / 4)
            late = self._in_flight and time.monotonic() - self._in_flight[0].sent_at
            if late and late > self.reply_timeout:
                self._broken(conn, TimeoutError(f"no reply from Redis in {self.reply_timeout:g}s"))

    def _broken(self, conn: Any, exc: BaseException) -> None:
        """Fail every call in flight on `conn` and let the next call open a new one."""
        if conn is not self._conn:
            return
        self._conn = None
        if self._watcher is not None:
            self._watcher.cancel()
        in_flight, self._in_flight = self._in_flight, collections.deque()
        error = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
        futures = [sent.future for sent in in_flight if sent.future is not None]
        for sent in in_flight:  # calls answered already but held for their WAIT
            if sent.future is None and sent.held:
                futures += [future for future, _ in sent.held]
        _fail(futures, error)
        self._start(self._release(conn))

    async def _release(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self.client.connection_pool.release(conn)

    async def aclose(self) -> None:
        """Fail what is in flight, stop the reader and give the connection back."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            self._broken(conn, RedisConnectionError("the shared connection is closed"))
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _Sent:
    """A call written and not yet answered (``future`` None: the write's closing WAIT)."""

    __slots__ = ("count", "future", "held", "sent_at")

    def __init__(self, count: int, future: asyncio.Future[list[Any]] | None, sent_at: float,
                 held: list[tuple[asyncio.Future[list[Any]], list[Any]]] | None) -> None:  # fmt: skip
        self.count = count
        self.future = future
        self.sent_at = sent_at
        self.held = held
        """The write's answered calls waiting for its WAIT (None without WAIT)."""


async def _no_undo(error: Exception) -> None:
    """Nothing to undo before a retry: the next try opens a new connection."""


def _fail(futures: list[asyncio.Future[list[Any]]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
