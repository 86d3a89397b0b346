"""httpx's transport API over aiohttp's connection pool.

An LLM client keeps httpx's typed public face (``httpx.AsyncClient``, its timeouts and
exception hierarchy), while the connections, HTTP/1.1 parsing (llhttp, in C), keep-alive,
TLS and happy eyeballs are aiohttp's. On a worker with hundreds of calls in flight this is
about half the CPU per call of httpx's own transport over httpcore, whose pool, h11 parser
and anyio locks were half of the worker's event-loop time (docs/performance.md, fix 23).

``AiohttpTransport.post_json`` is the JSON call of the hot path without httpx's request
and response objects; every other request (streams, embeddings, warm-up) goes through
``httpx.AsyncClient(transport=AiohttpTransport(...))``. Both raise httpx's exceptions.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import aiohttp
import httpx
from yarl import URL

_READ_CHUNK = 64 * 1024
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried while the previous one still connects
(RFC 8305): a host whose IPv6 route silently drops packets still connects."""


def httpx_error(exc: BaseException) -> httpx.HTTPError | httpx.InvalidURL:
    """The httpx exception a user of httpx would get for aiohttp's `exc`.

    Transport failures become httpx's ``TransportError`` family, which the LLM client
    retries; a URL aiohttp cannot send to becomes ``httpx.InvalidURL``, a header it refuses
    ``httpx.LocalProtocolError``, and a body that cannot be decoded ``httpx.DecodingError``
    (as with httpx's own transport). aiohttp reports the wait for a free connection and the
    connect itself with one error: both are ``ConnectTimeout``.
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)  # sock_read: no byte of the reply in time
    if isinstance(exc, TimeoutError):  # our deadline on sending (see Timeouts.send)
        return httpx.WriteTimeout("the server did not take the request in time")
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.InvalidURL(message)
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, TLS refused
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return httpx.WriteError(message)  # the connection closed while we wrote
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        if "content-encoding" in message.lower():  # "Can not decode content-encoding: gzip"
            return httpx.DecodingError(message)
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message)
    if isinstance(exc, ValueError):  # a header value aiohttp will not send (CR, LF, ...)
        return httpx.LocalProtocolError(message)
    return httpx.NetworkError(message)


_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What a failed request raises: aiohttp's hierarchy, and a deadline's TimeoutError."""
_SEND_ERRORS = (*_ERRORS, ValueError)
"""While sending, also aiohttp's ValueError for a header or URL it refuses."""
_LARGE_BODY = 1024 * 1024
"""Bodies above this go to aiohttp as a file-like object (it warns about large bytes)."""


class Timeouts(NamedTuple):
    """httpx's timeouts as aiohttp applies them, and a deadline aiohttp lacks."""

    aiohttp: aiohttp.ClientTimeout
    send: float | None
    """Seconds until the reply's head: aiohttp arms no timer while it writes the request,
    so a server that stops reading the body would hold the call forever without this.
    The sum of httpx's pool, connect, write and read timeouts (none if any is None)."""


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's byte stream: chunks as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
        except _ERRORS as exc:
            raise httpx_error(exc) from exc

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; otherwise it closes.
        self._response.release()


def _forget(session: aiohttp.ClientSession) -> None:
    """Drop a session whose event loop is closed (nothing can be awaited on it): marked
    closed, so neither it nor its connector reports itself unclosed; the sockets are freed
    with the objects."""
    close = getattr(session.connector, "_close", None)  # aiohttp's synchronous part of close
    if callable(close):
        close()
    session.detach()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport whose connections are one ``aiohttp.ClientSession``'s pool.

    `limits` sizes the pool (``max_connections``) and the keep-alive time of an idle
    connection (``keepalive_expiry``; 0 closes each connection after its request). The
    session is made on first use on the running loop; a transport serves one live loop at
    a time (a new loop once the previous one is closed), and once closed it stays closed
    (httpx's rule for clients). httpx's ``connect`` timeout bounds opening a
    connection, ``pool`` + ``connect`` the wait for one, and ``read`` each wait for bytes
    of the reply, the body included. aiohttp has no write timeout: a request whose reply
    has not begun after ``pool`` + ``connect`` + ``write`` + ``read`` fails with
    ``httpx.WriteTimeout`` (every other wait has run into its own timeout before that).
    """

    def __init__(
        self,
        limits: httpx.Limits,
        verify: ssl.SSLContext | bool = True,
        *,
        limit_per_host: int = 0,
        name: str = "LLM",
    ) -> None:
        self._limits = limits
        self._limit_per_host = limit_per_host
        self._name = name
        self._ssl: ssl.SSLContext = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify)
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._timeouts: dict[tuple[float | None, ...], Timeouts] = {}
        self._urls: dict[tuple[str, bool], URL] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pool of the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop:
            return session
        if self._closed:
            raise RuntimeError(f"the {self._name} transport has been closed")
        if session is not None and self._loop is not None and not self._loop.is_closed():
            raise RuntimeError(
                f"the {self._name} transport is in use on another event loop (not closed)"
            )
        if session is not None:  # its loop is gone: its sockets go with the objects
            _forget(session)
        limits = self._limits
        expiry = limits.keepalive_expiry
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            limit_per_host=self._limit_per_host,
            force_close=expiry == 0,
            keepalive_timeout=None if expiry == 0 else expiry,  # None: kept until closed
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            ssl=self._ssl,
        )
        session = self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._loop = loop
        return session

    def timeouts(self, timeout: Mapping[str, float | None]) -> Timeouts:
        """The timeouts of httpx's ``{"connect", "read", "write", "pool"}`` for aiohttp."""
        connect, read = timeout.get("connect"), timeout.get("read")
        write, pool = timeout.get("write"), timeout.get("pool")
        key = (connect, read, write, pool)
        cached = self._timeouts.get(key)
        if cached is None:
            waiting = None if connect is None or pool is None else connect + pool
            send = None if None in key else sum(t for t in key if t is not None)
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            cached = self._timeouts[key] = Timeouts(
                aiohttp.ClientTimeout(
                    total=None, connect=waiting, sock_connect=connect, sock_read=read
                ),
                send,
            )
        return cached

    def _url(self, url: str, encoded: bool = False) -> URL:
        key = (url, encoded)
        parsed = self._urls.get(key)
        if parsed is None:  # a provider has a handful of endpoints: parse each once
            if len(self._urls) > 64:
                self._urls.clear()
            parsed = self._urls[key] = URL(url, encoded=encoded)
        return parsed

    async def _send(
        self, method: str, url: URL, timeouts: Timeouts, **options: Any
    ) -> aiohttp.ClientResponse:
        """Send a request; the response once its head has arrived."""
        try:
            async with asyncio.timeout(timeouts.send):
                return await self.session.request(
                    method, url, allow_redirects=False, timeout=timeouts.aiohttp, **options
                )
        except _SEND_ERRORS as exc:
            raise httpx_error(exc) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled
            # Nobody cancelled the caller: the pool was closed while the call waited for a
            # connection (a replaced shard). A connection error, which the caller retries.
            raise httpx.ConnectError("the connection pool was closed") from None

    async def post_json(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        timeouts: Timeouts,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """POST `content` and read the whole reply: status, body (decoded from any
        content-encoding) and headers. Raises httpx's exceptions."""
        return await self.fetch("POST", url, content, headers, timeouts)

    async def fetch(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one request and read the whole reply: status, body (decoded from any
        content-encoding) and headers; `params` are added to the URL's query. No httpx
        request or response objects on the way. Raises httpx's exceptions."""
        data: Any = content if content is None or len(content) <= _LARGE_BODY else (
            io.BytesIO(content))  # fmt: skip
        try:
            target = self._url(url)
            if params:
                target = target.update_query(params)
        except (TypeError, ValueError) as exc:
            raise httpx.InvalidURL(f"{url!r}: {exc}") from exc
        response = await self._send(method, target, timeouts, data=data, headers=headers)
        try:
            return response.status, await response.read(), response.headers
        except _ERRORS as exc:
            raise httpx_error(exc) from exc
        finally:
            response.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send an httpx request; the reply's body streams as it arrives."""
        data: Any
        headers = request.headers.copy()
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp sends it chunked itself
            data = request.stream
            headers.pop("transfer-encoding", None)
        if isinstance(data, bytes) and len(data) > _LARGE_BODY:
            data = io.BytesIO(data)
        response = await self._send(
            request.method,
            self._url(str(request.url), encoded=True),  # httpx has quoted it already
            self.timeouts(request.extensions.get("timeout", {})),
            headers=headers.multi_items(),
            # aiohttp would add "content-type: application/octet-stream" to a bare body
            skip_auto_headers=() if "content-type" in headers else ("Content-Type",),
            data=data,
            auto_decompress=False,  # httpx decodes content-encoding itself
            server_hostname=request.extensions.get("sni_hostname"),
            read_bufsize=_READ_CHUNK,
        )
        version = response.version
        http_version = f"HTTP/{version.major}.{version.minor}" if version else "HTTP/1.1"
        extensions: dict[str, Any] = {"http_version": http_version.encode()}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions=extensions,
        )

    def discard(self) -> None:
        """Drop the pool of a loop that is closed (nothing can be awaited there): its
        sockets are freed with the objects. The transport takes no more requests."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            _forget(session)

    async def aclose(self) -> None:
        """Close every pooled connection; the transport takes no more requests."""
        self._closed = True
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._loop is asyncio.get_running_loop():
            await session.close()
        elif self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(session.close(), self._loop)
        else:
            _forget(session)
