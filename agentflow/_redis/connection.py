"""Redis connections for AgentFlow's own keys: one blocking pool per process, one async per loop.

The URL is resolved once per process (configured, else the default, else embedded) and is the
same one Celery's broker and result backend use. :func:`open_redis` and
:func:`open_async_redis` open a client for any URL AgentFlow accepts, ``sentinel://``
included (:mod:`agentflow._redis.sentinel`): every client of AgentFlow's own is made there.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from agentflow._redis._packing import with_hiredis_packing
from agentflow._redis.embedded import resolve_url
from agentflow.config import Settings, get_settings

_lock = threading.RLock()
_url: str | None = None
_client: redis.Redis | None = None
_client_pid: int | None = None
_async_clients: dict[int, aioredis.Redis] = {}


def redis_url(settings: Settings | None = None) -> str:
    """The Redis URL this process uses, resolved once (explicit settings with a URL win)."""
    global _url
    if settings is not None and settings.broker.url:
        return settings.broker.url
    if _url is None:
        with _lock:
            if _url is None:
                s = settings or get_settings()
                runtime = Path(s.broker.embedded_dir) if s.broker.embedded_dir else None
                _url = resolve_url(s.broker.url, s.broker.embedded, runtime)
    return _url


def result_url(settings: Settings | None = None) -> str:
    """The result backend URL: `[broker] result_url`, else the broker URL."""
    s = settings or get_settings()
    return s.broker.result_url or redis_url(s)


def is_sentinel(url: str | None) -> bool:
    """Whether `url` names Redis through Sentinel (``sentinel://``); the Sentinel module is
    imported only then."""
    return bool(url) and str(url).lower().startswith("sentinel://")


def open_redis(
    url: str,
    settings: Settings | None = None,
    *,
    max_connections: int = 512,
    timeout: float = 30.0,
    **connection: Any,
) -> redis.Redis:
    """A blocking client on `url` whose pool waits (up to `timeout` s) for a free connection.

    A ``sentinel://`` URL gives a client on the master its sentinels name, under
    ``[broker] sentinel_master`` and ``sentinel_password`` of `settings`.
    """
    connection.setdefault("socket_keepalive", True)
    if is_sentinel(url):
        from agentflow._redis import sentinel

        broker = (settings or get_settings()).broker
        return sentinel.master_client(url, broker.sentinel_master, broker.sentinel_password,
                                      max_connections=max_connections, timeout=timeout,
                                      **connection)  # fmt: skip
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **connection
    )
    return redis.Redis(connection_pool=pool)


def open_async_redis(
    url: str,
    settings: Settings | None = None,
    *,
    max_connections: int = 512,
    timeout: float = 30.0,
    **connection: Any,
) -> aioredis.Redis:
    """:func:`open_redis` for ``redis.asyncio``; commands are packed by hiredis."""
    connection.setdefault("socket_keepalive", True)
    client: aioredis.Redis
    if is_sentinel(url):
        from agentflow._redis import sentinel

        broker = (settings or get_settings()).broker
        client = sentinel.async_master_client(url, broker.sentinel_master,
                                              broker.sentinel_password,
                                              max_connections=max_connections, timeout=timeout,
                                              **connection)  # fmt: skip
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **connection
        )
        client = aioredis.Redis(connection_pool=pool)
    opened = client.connection_pool
    opened.connection_class = with_hiredis_packing(opened.connection_class,
                                                   opened.connection_kwargs)  # fmt: skip
    return client


def get_redis() -> redis.Redis:
    """A process-wide blocking Redis client (bytes in, bytes out); safe across threads."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        with _lock:
            if _client is None or _client_pid != os.getpid():
                _client = open_redis(redis_url())
                _client_pid = os.getpid()
    return _client


def get_async_redis() -> aioredis.Redis:
    """An asyncio Redis client for the running event loop."""
    import asyncio

    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = open_async_redis(redis_url())
        _async_clients[loop_id] = client
    return client


def reset() -> None:
    """Forget the resolved URL and clients (tests; after changing configuration)."""
    global _url, _client, _client_pid
    with _lock:
        _url = None
        if _client is not None:
            _client.close()
        _client = None
        _client_pid = None
        _async_clients.clear()
