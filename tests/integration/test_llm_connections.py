"""LLM connections on AgentFlow's aiohttp transport for httpx, against real loopback servers.

Each test starts a small HTTP/1.1 server on 127.0.0.1 (plain, or TLS with a throwaway CA)
and talks to it through :class:`AiohttpTransport`, under an ``httpx.AsyncClient`` or by its
``post_json`` fast path, on asyncio's loop and on uvloop: what an LLM call sees when the
server answers, stalls, closes idle connections, sends a large body, or is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from agentflow.llm import _aiohttp_transport
from agentflow.llm._aiohttp_transport import AiohttpTransport

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


def reply(body: bytes, *, close: bool = False, status: bytes = b"200 OK",
          extra: bytes = b"") -> bytes:  # fmt: skip
    connection = b"close" if close else b"keep-alive"
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: " + connection + b"\r\n" + extra
            + b"\r\n" + body)  # fmt: skip


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
    return httpx.AsyncClient(transport=AiohttpTransport(limits, verify), timeout=timeout)


LOOPS = pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])


@LOOPS
def test_requests_reuse_one_keep_alive_connection(loop_kind: str) -> None:
    """Ten sequential calls share one keep-alive connection of the transport's pool."""
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
                assert response.extensions["http_version"] == b"HTTP/1.1"
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
            async with client(True) as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"https://127.0.0.1:{port}/")

    run(loop_kind, main())


@LOOPS
def test_a_server_that_stops_reading_gives_a_write_timeout(loop_kind: str) -> None:
    """A server that reads nothing of a 64 MB body and never answers: the call ends with a
    write timeout once pool + connect + write + read seconds have passed."""
    payload = b"x" * (64 * 1024 * 1024)

    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()

    async def main() -> None:
        timeout = httpx.Timeout(0.2)
        async with serve(handler) as port, client(timeout=timeout) as http:
            started = asyncio.get_running_loop().time()
            with pytest.raises(httpx.WriteTimeout):
                await http.post(f"http://127.0.0.1:{port}/up", content=payload)
            assert 0.8 <= asyncio.get_running_loop().time() - started < 4
            done.set()

    run(loop_kind, main())


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request, one ``{"ok": true}`` reply."""
    await read_request(reader)
    writer.write(reply(b'{"ok":true}'))
    await writer.drain()


def _two_addresses(monkeypatch: pytest.MonkeyPatch, first: str, port: int) -> None:
    """The host resolves to `first`, then to 127.0.0.1 (where the server listens)."""

    real = {loop: loop.getaddrinfo for loop in (asyncio.BaseEventLoop, uvloop.Loop)}

    def fake(loop_type: Any) -> Any:
        async def getaddrinfo(self: Any, host: str, p: int, **kwargs: Any) -> list[Any]:
            if host != "llm.example":  # uvloop resolves the addresses it connects to
                return list(await real[loop_type](self, host, p, **kwargs))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (first, port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]  # fmt: skip

        return getaddrinfo

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", fake(asyncio.BaseEventLoop))
    monkeypatch.setattr(uvloop.Loop, "getaddrinfo", fake(uvloop.Loop), raising=False)


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
    abandoned: list[str] = []
    selector_loop = asyncio.selector_events.BaseSelectorEventLoop
    real = selector_loop.sock_connect

    async def sock_connect(self: Any, sock: socket.socket, address: Any) -> None:
        if address[0] == "127.0.0.2":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                abandoned.append(address[0])
                raise
        await real(self, sock, address)

    async def main() -> None:
        async with serve(answer_ok) as port, client() as http:
            _two_addresses(monkeypatch, "127.0.0.2", port)
            monkeypatch.setattr(selector_loop, "sock_connect", sock_connect)
            started = asyncio.get_running_loop().time()
            response = await http.get(f"http://llm.example:{port}/")
            took = asyncio.get_running_loop().time() - started
            assert response.json() == {"ok": True}
            assert _aiohttp_transport.HAPPY_EYEBALLS_DELAY <= took < 2
            await asyncio.sleep(0.01)
            assert abandoned == ["127.0.0.2"]

    run("asyncio", main())


def test_post_json_gives_status_body_and_headers_and_decodes_gzip() -> None:
    """The hot path's JSON call: a gzip-encoded reply arrives decoded, and an error status
    comes back with its headers (Retry-After) for the retry loop."""
    body = gzip.compress(b'{"choices":[]}')
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        while await read_request(reader):
            calls += 1
            if calls == 1:
                writer.write(reply(body, extra=b"content-encoding: gzip\r\n"))
            else:
                writer.write(reply(b'{"error":"slow down"}', status=b"429 Too Many Requests",
                                   extra=b"retry-after: 2\r\n"))  # fmt: skip
            await writer.drain()

    async def main() -> None:
        transport = AiohttpTransport(httpx.Limits(max_connections=2))
        timeout = transport.timeouts(httpx.Timeout(5.0).as_dict())
        headers = {"content-type": "application/json"}
        try:
            async with serve(handler) as port:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                status, data, _ = await transport.post_json(url, b"{}", headers, timeout)
                assert (status, data) == (200, b'{"choices":[]}')
                status, data, got = await transport.post_json(url, b"{}", headers, timeout)
                assert status == 429 and got["Retry-After"] == "2"
                assert b"slow down" in data
        finally:
            await transport.aclose()

    run("uvloop", main())


def test_post_json_raises_httpx_errors() -> None:
    """Nothing listening, and a server that closes without answering: httpx's exception
    types, which the LLM client's retry loop classifies."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def main() -> None:
        transport = AiohttpTransport(httpx.Limits(max_connections=2))
        timeout = transport.timeouts(httpx.Timeout(5.0).as_dict())
        try:
            with pytest.raises(httpx.ConnectError):
                await transport.post_json(f"http://127.0.0.1:{closed_port}/", b"{}", {}, timeout)
            async with serve(hang_up) as port:
                with pytest.raises(httpx.RemoteProtocolError):
                    await transport.post_json(f"http://127.0.0.1:{port}/", b"{}", {}, timeout)
        finally:
            await transport.aclose()

    run("asyncio", main())


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request, one ``{"ok": true}`` reply, then the server closes the connection."""
    await read_request(reader)
    writer.write(reply(b'{"ok":true}', close=True))
    await writer.drain()
    writer.close()


def test_one_transport_serves_a_new_loop_once_the_old_one_is_closed() -> None:
    """A transport used from a new event loop after its loop was closed opens a pool there
    (as in a process whose loop was replaced); while its loop still runs, another loop is
    refused rather than handed that loop's connections."""
    transport = AiohttpTransport(httpx.Limits(max_connections=2))
    timeouts = transport.timeouts(httpx.Timeout(5.0).as_dict())

    async def once() -> None:
        async with serve(answer_and_close) as port:
            status, data, _ = await transport.post_json(
                f"http://127.0.0.1:{port}/", b"{}", {}, timeouts
            )
            assert (status, data) == (200, b'{"ok":true}')

    run("asyncio", once())
    run("uvloop", once())
    alive = asyncio.new_event_loop()
    try:
        alive.run_until_complete(once())
        with pytest.raises(RuntimeError, match="another event loop"):
            run("asyncio", once())
        alive.run_until_complete(transport.aclose())
    finally:
        alive.close()


def test_closing_the_transport_fails_waiting_calls_with_httpx_errors() -> None:
    """A replaced shard is closed while calls still wait for its only connection: every
    call ends with an httpx transport error the retry loop handles (not a bare
    cancellation), and the closed transport takes no more requests."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.3)
            writer.write(reply(b'{"ok":true}'))
            await writer.drain()

    async def main() -> None:
        transport = AiohttpTransport(httpx.Limits(max_connections=1))
        timeouts = transport.timeouts(httpx.Timeout(5.0).as_dict())
        async with serve(slow) as port:
            url = f"http://127.0.0.1:{port}/"
            calls = [asyncio.ensure_future(transport.post_json(url, b"{}", {}, timeouts))
                     for _ in range(3)]  # fmt: skip
            await asyncio.sleep(0.1)
            await transport.aclose()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, httpx.TransportError) for r in results), results
            assert sum(isinstance(r, httpx.ConnectError) for r in results) == 2
            with pytest.raises(RuntimeError, match="closed"):
                await transport.post_json(url, b"{}", {}, timeouts)

    run("uvloop", main())


def test_requests_go_out_as_httpx_built_them() -> None:
    """The path keeps httpx's quoting, a body-less request gets no content type of
    aiohttp's, a header value with a line break is refused before anything is sent, and a
    gzip body that does not decode is a decoding error (not retried)."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            seen.append(request)
            if b"/broken" in request:
                writer.write(reply(b"not gzip", extra=b"content-encoding: gzip\r\n"))
            else:
                writer.write(reply(b'{"ok":true}'))
            await writer.drain()

    async def main() -> None:
        async with serve(handler) as port, client() as http:
            response = await http.get(f"http://127.0.0.1:{port}/a/%7Euser/x%3By")
            assert response.extensions["http_version"] == b"HTTP/1.1"
            assert seen[0].startswith(b"GET /a/%7Euser/x%3By HTTP/1.1\r\n")
            assert b"content-type" not in seen[0].lower()
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(f"http://127.0.0.1:{port}/", headers={"x-key": "abc\nx"})
            assert len(seen) == 1
            transport = AiohttpTransport(httpx.Limits(max_connections=1))
            timeouts = transport.timeouts(httpx.Timeout(5.0).as_dict())
            try:
                with pytest.raises(httpx.DecodingError):
                    await transport.post_json(f"http://127.0.0.1:{port}/broken", b"{}", {},
                                              timeouts)  # fmt: skip
            finally:
                await transport.aclose()

    run("asyncio", main())


def test_a_reply_cut_off_mid_body_is_a_transport_error_the_client_retries() -> None:
    """A chunked reply whose connection drops halfway: an httpx transport error (retried by
    the LLM client), not a decoding error."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n5\r\n{\"ok\"\r\n")  # fmt: skip
        await writer.drain()
        writer.close()

    async def main() -> None:
        transport = AiohttpTransport(httpx.Limits(max_connections=1))
        timeouts = transport.timeouts(httpx.Timeout(5.0).as_dict())
        try:
            async with serve(cut) as port:
                url = f"http://127.0.0.1:{port}/"
                with pytest.raises(httpx.TransportError):
                    await transport.post_json(url, b"{}", {}, timeouts)
                async with httpx.AsyncClient(transport=transport) as http:
                    with pytest.raises(httpx.TransportError):
                        await http.get(url)
        finally:
            await transport.aclose()

    run("uvloop", main())
