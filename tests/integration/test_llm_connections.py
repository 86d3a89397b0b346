"""LLM connections on AgentFlow's asyncio network backend, against real loopback servers.

Each test starts a small HTTP/1.1 server on 127.0.0.1 (plain, or TLS with a throwaway CA)
and talks to it through :class:`AsyncioHTTPTransport` under an ``httpx.AsyncClient``, on
asyncio's loop and on uvloop: what an LLM call sees when the server answers, stalls, closes
idle connections, sends a large body, or is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from agentflow.llm._netbackend import AsyncioHTTPTransport, AsyncioStream

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(loop_kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length bodies only); b"" at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


def reply(body: bytes, *, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: " + connection + b"\r\n\r\n" + body)  # fmt: skip


@contextlib.asynccontextmanager
async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await asyncio.sleep(0.01)  # handlers see the client's close and return
        server.close()


def client(
    verify: ssl.SSLContext | bool = True, timeout: float | httpx.Timeout = 5.0
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=30)
    return httpx.AsyncClient(transport=AsyncioHTTPTransport(limits, verify), timeout=timeout)


LOOPS = pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])


@LOOPS
def test_requests_reuse_one_connection_of_the_backend(loop_kind: str) -> None:
    """Ten sequential calls share one keep-alive connection, which is AgentFlow's stream."""
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while request := await read_request(reader):
            writer.write(reply(b'{"echo":' + str(len(request)).encode() + b"}"))
            await writer.drain()

    async def main() -> None:
        async with serve(handler) as port, client() as http:
            for i in range(10):
                response = await http.post(f"http://127.0.0.1:{port}/v1/chat",
                                           json={"i": i})  # fmt: skip
                assert response.status_code == 200
                assert response.json()["echo"] > 0
                assert isinstance(response.extensions["network_stream"], AsyncioStream)
        assert accepted == 1

    run(loop_kind, main())


@LOOPS
def test_a_connection_the_server_closed_while_idle_is_not_reused(loop_kind: str) -> None:
    """The server closes each connection after one reply (no ``connection: close`` header,
    as a proxy's idle timeout would): the next call opens a new connection and succeeds."""
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await read_request(reader)
        writer.write(reply(b'{"ok":true}'))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with serve(handler) as port, client() as http:
            for _ in range(3):
                response = await http.get(f"http://127.0.0.1:{port}/")
                assert response.json() == {"ok": True}
                await asyncio.sleep(0.05)  # the close reaches the idle connection
        assert accepted == 3

    run(loop_kind, main())


@LOOPS
def test_a_server_that_never_answers_gives_a_read_timeout(loop_kind: str) -> None:
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await done.wait()

    async def main() -> None:
        async with serve(handler) as port, client(timeout=0.3) as http:
            started = asyncio.get_running_loop().time()
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{port}/")
            assert asyncio.get_running_loop().time() - started < 5
            done.set()

    run(loop_kind, main())


@LOOPS
def test_nothing_listening_gives_a_connect_error(loop_kind: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there

    async def main() -> None:
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")

    run(loop_kind, main())


@LOOPS
def test_a_reply_larger_than_the_read_buffer_arrives_whole(loop_kind: str) -> None:
    """A 3 MB reply: reading pauses and resumes on the socket, nothing is lost or reordered."""
    body = bytes(range(256)) * (3 * 4096)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply(body))
        await writer.drain()

    async def main() -> None:
        async with serve(handler) as port, client() as http:
            response = await http.get(f"http://127.0.0.1:{port}/big")
            assert response.content == body

    run(loop_kind, main())


@LOOPS
def test_a_large_request_body_is_sent_whole(loop_kind: str) -> None:
    """A 4 MB request body fills the socket's send buffer: the write waits, then finishes."""
    payload = b"x" * (4 * 1024 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        await asyncio.sleep(0.2)  # let the client's send buffer fill up first
        writer.write(reply(str(len(request.split(b"\r\n\r\n", 1)[1])).encode()))
        await writer.drain()

    async def main() -> None:
        async with serve(handler) as port, client() as http:
            response = await http.post(f"http://127.0.0.1:{port}/up", content=payload)
            assert response.json() == len(payload)

    run(loop_kind, main())


@LOOPS
def test_https_verifies_the_server_certificate(loop_kind: str) -> None:
    """TLS through ``start_tls``: a certificate from a trusted CA works, an unknown CA is
    refused as a connection error."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await read_request(reader)
            writer.write(reply(b'{"tls":true}'))
            await writer.drain()

    async def main() -> None:
        async with serve(handler, server_context) as port:
            async with client(trusted) as http:
                response = await http.get(f"https://127.0.0.1:{port}/")
                assert response.json() == {"tls": True}
                assert response.extensions["network_stream"].get_extra_info("ssl_object")
            async with client(True) as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"https://127.0.0.1:{port}/")

    run(loop_kind, main())


@LOOPS
def test_a_server_that_stops_reading_gives_a_write_timeout(loop_kind: str) -> None:
    """The body is not piled up in memory while the server reads nothing: once the socket's
    buffers are full the write waits, and gives up after the write timeout."""
    payload = b"x" * (64 * 1024 * 1024)

    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()

    async def main() -> None:
        timeout = httpx.Timeout(5.0, write=0.3)
        async with serve(handler) as port, client(timeout=timeout) as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.post(f"http://127.0.0.1:{port}/up", content=payload)
            done.set()

    run(loop_kind, main())


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request, one ``{"ok": true}`` reply."""
    await read_request(reader)
    writer.write(reply(b'{"ok":true}'))
    await writer.drain()


def _two_addresses(monkeypatch: pytest.MonkeyPatch, first: str, port: int) -> None:
    """The host resolves to `first`, then to 127.0.0.1 (where the server listens)."""

    async def getaddrinfo(self: Any, host: str, p: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (first, port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]  # fmt: skip

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(uvloop.Loop, "getaddrinfo", getaddrinfo, raising=False)


@LOOPS
def test_an_address_that_refuses_is_skipped_at_once(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with serve(answer_ok) as port, client() as http:
            _two_addresses(monkeypatch, "127.0.0.2", port)  # nothing listens there
            started = asyncio.get_running_loop().time()
            response = await http.get(f"http://llm.example:{port}/")
            assert response.json() == {"ok": True}
            assert asyncio.get_running_loop().time() - started < 0.2

    run(loop_kind, main())


def test_an_address_that_never_answers_does_not_hold_up_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a host whose IPv6 route drops packets: the second address is tried after the
    happy-eyeballs delay and wins; the stalled attempt is cancelled."""
    from agentflow.llm import _netbackend

    stalled: list[asyncio.Task[Any]] = []
    real = asyncio.BaseEventLoop.create_connection

    async def create_connection(self: Any, factory: Any, host: str, port: int,
                                **kwargs: Any) -> Any:  # fmt: skip
        if host == "127.0.0.2":
            stalled.append(asyncio.current_task())  # type: ignore[arg-type]
            await asyncio.sleep(3600)
        return await real(self, factory, host, port, **kwargs)

    async def main() -> None:
        async with serve(answer_ok) as port, client() as http:
            _two_addresses(monkeypatch, "127.0.0.2", port)
            monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", create_connection)
            started = asyncio.get_running_loop().time()
            response = await http.get(f"http://llm.example:{port}/")
            took = asyncio.get_running_loop().time() - started
            assert response.json() == {"ok": True}
            assert _netbackend.HAPPY_EYEBALLS_DELAY <= took < 2
            await asyncio.sleep(0)
            assert len(stalled) == 1 and stalled[0].cancelled()

    run("asyncio", main())
