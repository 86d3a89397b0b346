"""One pooled HTTP client per event loop per process, on the LLM layer's aiohttp transport.

:class:`HTTPClient` sends a request through :class:`AiohttpTransport`'s whole-reply path
(:meth:`~agentflow.llm._aiohttp_transport.AiohttpTransport.fetch`): aiohttp's pool, its C
HTTP parser, keep-alive and happy eyeballs, no httpx request or response objects, and
httpx's exception types. Idempotent requests are retried with backoff after a connection
error or a 502/503/504; any request is retried when it never left (no connection could
be had).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
from collections.abc import Mapping
from typing import Any

import httpx
from multidict import CIMultiDict

from agentflow.config import HTTPConfig
from agentflow.http.response import Response
from agentflow.llm._aiohttp_transport import AiohttpTransport, Timeouts
from agentflow.llm.client import _USER_AGENT

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried after an error that may have reached the server (RFC 9110, 9.2.2)."""
RETRY_STATUS = frozenset({502, 503, 504})
"""Statuses of a gateway or server that is briefly unavailable: retried when idempotent."""
Params = Mapping[str, str | int | float]


def _never_sent(exc: httpx.TransportError) -> bool:
    """Whether the request surely did not reach the server: no connection was had."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class _Borrowed(httpx.AsyncBaseTransport):
    """The client's transport lent to an ``httpx.AsyncClient``: closing that client leaves
    the pool open (it belongs to the process)."""

    def __init__(self, transport: AiohttpTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None


class HTTPClient:
    """Requests from one event loop: a pool sized by `[http]`, its timeouts and retries."""

    def __init__(self, config: HTTPConfig) -> None:
        self.config = c = config
        limits = httpx.Limits(max_connections=c.max_connections,
                              max_keepalive_connections=c.max_connections,
                              keepalive_expiry=c.idle_timeout)  # fmt: skip
        self.transport = AiohttpTransport(
            limits, limit_per_host=c.max_connections_per_host, name="HTTP"
        )
        self._headers: Mapping[str, str] = CIMultiDict({"user-agent": c.user_agent or _USER_AGENT})
        self._json_headers: Mapping[str, str] = CIMultiDict(
            {**self._headers, "content-type": "application/json"}
        )
        self._timeouts = self._timeouts_for(None)
        self._httpx: httpx.AsyncClient | None = None

    def _timeouts_for(self, timeout: float | None) -> Timeouts:
        c = self.config
        read = c.timeout if timeout is None else timeout
        wait = c.connect_timeout
        return self.transport.timeouts({"connect": wait, "pool": wait, "read": read, "write": read})

    def _merged(self, base: Mapping[str, str], extra: Mapping[str, str] | None) -> Any:
        if not extra:
            return base
        merged = CIMultiDict(base)
        merged.update(extra)
        return merged

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send `method` to `url` and read the whole reply.

        `json` is sent as a JSON body (``content-type: application/json``), `content` as is
        (a str as UTF-8). `timeout` replaces `[http] timeout` for this call. Raises httpx's
        exceptions for transport failures; an error status is returned, not raised (see
        :meth:`Response.raise_for_status`).
        """
        method = method.upper()
        body: bytes | None
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            sent_headers = self._merged(self._json_headers, headers)
        else:
            body = content.encode() if isinstance(content, str) else content
            sent_headers = self._merged(self._headers, headers)
        timeouts = self._timeouts if timeout is None else self._timeouts_for(timeout)
        query = {k: str(v) for k, v in params.items()} if params else None
        idempotent = method in IDEMPOTENT
        retries = self.config.retries
        attempt = 0
        while True:
            try:
                status, reply, reply_headers = await self.transport.fetch(
                    method, url, body, sent_headers, timeouts, query
                )
            except httpx.TransportError as exc:
                if attempt >= retries or not (idempotent or _never_sent(exc)):
                    raise
            else:
                if not (idempotent and status in RETRY_STATUS and attempt < retries):
                    return Response(status, reply_headers, reply, method, url)
            attempt += 1
            delay = self.config.retry_backoff * 2 ** (attempt - 1)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def httpx_client(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on this client's pool, for code that wants httpx's own
        API (streams, auth flows, redirects, a library that takes a client)."""
        if self._httpx is None:
            c = self.config
            self._httpx = httpx.AsyncClient(
                transport=_Borrowed(self.transport),
                timeout=httpx.Timeout(c.timeout, connect=c.connect_timeout,
                                      pool=c.connect_timeout),
                headers={"user-agent": c.user_agent or _USER_AGENT},
            )  # fmt: skip
        return self._httpx

    async def aclose(self) -> None:
        """Close every pooled connection; the client takes no more requests."""
        await self.transport.aclose()
