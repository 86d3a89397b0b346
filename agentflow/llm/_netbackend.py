"""An httpcore network backend on plain asyncio protocols, and the httpx transport using it.

httpcore runs on asyncio through anyio: every read and write of a pooled connection enters
a cancel scope and a ``fail_after`` timer, and every check of an idle connection polls its
socket. On a worker making a thousand LLM calls a second that was a fifth of its CPU. This
backend implements httpcore's public network-backend interface (``AsyncNetworkBackend``,
``AsyncNetworkStream``) with an ``asyncio.Protocol``: data the loop has already received is
returned without a wait, a timer is armed only when a read must wait, and whether an idle
connection was closed by the server is known without a system call. Works on asyncio's own
loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import collections
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx

_HIGH_WATER = 256 * 1024
"""Stop reading from a socket while this many received bytes wait to be read."""
_IDLE_CHECK = 1.0
"""Seconds without traffic after which reusing a pooled connection polls its socket first."""
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried while the previous one still connects
(RFC 8305, as anyio does): a host whose IPv6 route silently drops packets still connects."""


def _socket_readable(sock: Any) -> bool:
    """Whether `sock` has data or an end of stream waiting (a closed socket counts)."""
    try:
        fd = sock.fileno()
    except (AttributeError, OSError):
        return True
    if fd < 0:
        return True
    return bool(select.select([fd], [], [], 0)[0])


class _Protocol(asyncio.Protocol):
    """Received data, end of stream and write pauses of one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.active_at = loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.active_at = self.loop.time()
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close our side too: HTTP/1.1 has no use for a half-closed socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        writer, self.writer = self.writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def pause_writing(self) -> None:
        if self.writer is None:
            self.writer = self.loop.create_future()

    def resume_writing(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def _wake_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)


def _expire(future: asyncio.Future[None], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection as an httpcore network stream."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    async def _wait(self, future: asyncio.Future[None], timeout: float | None,
                    error: Exception) -> None:  # fmt: skip
        if timeout is None:
            await future
            return
        timer = self._protocol.loop.call_later(timeout, _expire, future, error)
        try:
            await future
        finally:
            timer.cancel()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` received bytes; ``b""`` at end of stream."""
        p = self._protocol
        if not p.chunks and not p.eof:
            p.reader = p.loop.create_future()
            await self._wait(p.reader, timeout, httpcore.ReadTimeout("timed out reading"))
        if p.chunks:
            data = p.chunks.popleft()
            if len(data) > max_bytes:
                data, rest = data[:max_bytes], data[max_bytes:]
                p.chunks.appendleft(rest)
            p.buffered -= len(data)
            if p.reading_paused and p.buffered <= _HIGH_WATER // 2 and p.transport is not None:
                p.transport.resume_reading()
                p.reading_paused = False
            return data
        if p.error is not None:
            raise httpcore.ReadError(str(p.error) or type(p.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send `buffer`; wait only while the socket's send buffer is full."""
        if not buffer:
            return
        p = self._protocol
        transport = p.transport
        if transport is None or transport.is_closing() or p.error is not None:
            raise httpcore.WriteError("the connection is closed")
        p.active_at = p.loop.time()
        transport.write(buffer)
        if p.writer is not None:
            await self._wait(p.writer, timeout, httpcore.WriteTimeout("timed out writing"))
            if p.error is not None or transport.is_closing():
                raise httpcore.WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        """Close the connection (without waiting for the peer)."""
        transport = self._protocol.transport
        if transport is not None:
            transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Upgrade the connection to TLS in place (loop.start_tls)."""
        p = self._protocol
        assert p.transport is not None
        try:
            upgraded = await asyncio.wait_for(
                p.loop.start_tls(p.transport, p, ssl_context, server_hostname=server_hostname),
                timeout,
            )
        except TimeoutError as exc:
            p.transport.close()
            raise httpcore.ConnectTimeout("timed out during the TLS handshake") from exc
        except (OSError, ssl.SSLError) as exc:
            p.transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if upgraded is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        p.transport = upgraded
        return self

    def get_extra_info(self, info: str) -> Any:
        """What httpcore asks of a stream: the TLS object, addresses, socket, readability."""
        p = self._protocol
        if info == "is_readable":  # an idle connection the server closed, or sent data on
            if p.chunks or p.eof:
                return True
            # What the loop has not read yet: a connection idle for a while may have been
            # closed by the server a moment ago; ask the socket (one poll, not per request).
            if p.loop.time() - p.active_at > _IDLE_CHECK and p.transport is not None:
                return _socket_readable(p.transport.get_extra_info("socket"))
            return False
        if p.transport is None:
            return None
        key = {"ssl_object": "ssl_object", "client_addr": "sockname",
               "server_addr": "peername", "socket": "socket"}.get(info)  # fmt: skip
        return None if key is None else p.transport.get_extra_info(key)


async def _open_first(loop: asyncio.AbstractEventLoop, host: str, port: int,
                      local: tuple[str, int] | None) -> tuple[Any, _Protocol]:  # fmt: skip
    """A connection to the first of `host`'s addresses that answers: one address at a time,
    the next one started after :data:`HAPPY_EYEBALLS_DELAY` or as soon as one fails, address
    families alternating (uvloop's ``create_connection`` tries them one after another)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    families: dict[int, list[Any]] = {}
    for family, *_, address in infos:
        families.setdefault(family, []).append(address)
    queues = list(families.values())
    addresses = [
        q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)
    ]
    if not addresses:
        raise OSError(f"no address found for {host}")

    def factory() -> _Protocol:
        return _Protocol(loop)

    attempts: list[asyncio.Task[tuple[Any, _Protocol]]] = []
    errors: list[BaseException] = []
    winner: asyncio.Task[tuple[Any, _Protocol]] | None = None
    try:
        while winner is None:
            if len(attempts) < len(addresses):
                address = addresses[len(attempts)]
                attempts.append(loop.create_task(
                    loop.create_connection(factory, address[0], address[1], local_addr=local)))  # fmt: skip
            running = [a for a in attempts if not a.done()]
            more = len(attempts) < len(addresses)
            if not running:
                if more:
                    continue
                break
            done, _ = await asyncio.wait(running, timeout=HAPPY_EYEBALLS_DELAY if more else None,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            for attempt in done:
                error = attempt.exception()
                if error is None:
                    winner = attempt
                    break
                errors.append(error)
    finally:
        for attempt in attempts:
            if attempt is winner:
                continue
            if not attempt.done():
                attempt.cancel()
            elif not attempt.cancelled() and attempt.exception() is None:
                attempt.result()[0].close()  # a second address that connected too
    if winner is not None:
        return winner.result()
    if len(errors) == 1 and isinstance(errors[0], OSError):
        raise errors[0]
    raise OSError(f"could not connect to {host}:{port}: " + "; ".join(map(str, errors)))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on the running asyncio (or uvloop) event loop."""

    async def _connect(self, opening: Any, timeout: float | None,
                       socket_options: Iterable[httpcore.SOCKET_OPTION] | None) -> AsyncioStream:  # fmt: skip
        try:
            _, protocol = await asyncio.wait_for(opening, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("timed out connecting") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        assert isinstance(protocol, _Protocol)
        if socket_options and protocol.transport is not None:
            sock = protocol.transport.get_extra_info("socket")
            for option in socket_options:
                sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A TCP connection to `host`:`port` (asyncio sets TCP_NODELAY)."""
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        opening = _open_first(loop, host, port, local)
        return await self._connect(opening, timeout, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the Unix socket at `path`."""
        loop = asyncio.get_running_loop()
        opening = loop.create_unix_connection(lambda: _Protocol(loop), path)
        return await self._connect(opening, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the loop (httpcore's connect retries)."""
        await asyncio.sleep(seconds)


class AsyncioHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, exception mapping, pooling by httpcore) with
    its connections on :class:`AsyncioBackend`.

    httpx does not yet take a network backend as an argument (encode/httpx#3749), so the
    transport builds httpcore's public ``AsyncConnectionPool`` itself and puts it where
    httpx keeps its pool; httpx is pinned below 0.29 and a unit test checks the hook.
    """

    def __init__(self, limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> None:
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else (
            httpx.create_ssl_context(verify=verify))  # fmt: skip
        super().__init__(limits=limits, verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )
