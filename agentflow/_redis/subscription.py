"""A lean pub/sub subscription on one connection: channels in, ``(channel, data)`` out.

:class:`~agentflow.client._async_results.AsyncResultWaiter` subscribes to each awaited
result's channel and drops it once the result came: a SUBSCRIBE, a message and an
UNSUBSCRIBE per event. redis-py's ``PubSub.get_message`` costs a timeout, a retry wrapper,
two metric hooks and a message dict per read, and keeps its own copy of the channel set to
subscribe again after a reconnect (measured: a sixth of the asyncio producer's CPU per
event; docs/internals.md). Here one reader reads the connection's replies as they come and
hands each published message to a callback; the caller owns the channel set, and after a
lost connection (:meth:`Subscription.read` raises ``ConnectionError``) it subscribes again
to what it still waits for on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Subscription:
    """SUBSCRIBE and UNSUBSCRIBE on one connection of `client`'s pool, and a reader that
    passes each message to `on_message(channel, data)`."""

    def __init__(self, client: aredis.Redis, on_message: Callable[[bytes, bytes], None]) -> None:
        self.client = client
        self.on_message = on_message
        self._conn: Any = None
        self._lock = asyncio.Lock()
        """One command written at a time, in the order callers asked."""

    @property
    def connected(self) -> bool:
        """Whether a connection is open (a new one is subscribed to nothing)."""
        return self._conn is not None

    async def subscribe(self, channels: list[str]) -> bool:
        """Subscribe to `channels`; True when that opened a new connection, so the caller
        subscribes again to the rest of what it waits for (and reads what was stored)."""
        opened = False
        async with self._lock:
            if self._conn is None:
                self._conn = await self.client.connection_pool.get_connection()
                opened = True
            await self._send(["SUBSCRIBE", *channels])
        return opened

    async def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe from `channels` (nothing to do without a connection)."""
        async with self._lock:
            if self._conn is not None and channels:
                await self._send(["UNSUBSCRIBE", *channels])

    async def _send(self, command: list[Any]) -> None:
        conn = self._conn
        try:
            await conn.send_packed_command(conn.pack_command(*command), check_health=False)
        except Exception:
            await self._drop(conn)
            raise

    async def read(self) -> None:
        """Read until the connection fails (``ConnectionError``), passing on each message.
        Returns at once without a connection."""
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                try:
                    reply = await conn.read_response(disconnect_on_error=False)
                except ResponseError:
                    continue  # a refused command's error; the caller's sweep reads results
                except RedisTimeoutError:
                    continue  # the connection's socket_timeout passed with nothing published
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self.on_message(reply[1], reply[2])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._drop(conn)
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"result subscription failed: {exc}") from exc

    async def _drop(self, conn: Any) -> None:
        """Close `conn` and give it back to the pool; the next subscribe opens a new one."""
        if conn is not self._conn:
            return
        self._conn = None
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self.client.connection_pool.release(conn)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._drop(self._conn)
