"""Redis Sentinel: ``sentinel://`` URLs, and connection pools that follow the master.

A Sentinel URL lists the sentinels, ``;``-separated, as kombu and Celery read it::

    sentinel://:redis-password@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379

The first URL carries the Redis password (user name too, with ACLs) and the database; the
master's name and the sentinels' own password come from ``[broker] sentinel_master`` and
``sentinel_password``. Every client AgentFlow opens for such a URL (producers, the worker's
own keys, scripts and streams) asks the sentinels for the master when it connects, and a
connection that finds the old master gone or demoted (``READONLY``) is dropped, so the next
command reconnects to the new master. Celery's broker and result backend are kombu's and
Celery's own Sentinel classes under the same options (:mod:`agentflow._redis.celery_settings`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel, SentinelConnectionPool

from agentflow.errors import ConfigError

DEFAULT_PORT = 26379


def parse(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The sentinels' (host, port) pairs, and the master's connection settings (db,
    username, password) from the first URL, as kombu and Celery read them."""
    hosts: list[tuple[str, int]] = []
    master: dict[str, Any] = {"db": 0}
    for part in (p for p in url.split(";") if p.strip()):
        split = urlsplit(part.strip())
        if split.scheme.lower() != "sentinel" or not split.hostname:
            raise ConfigError(f"not a sentinel URL: {part!r} (sentinel://[:password@]host:port)")
        hosts.append((split.hostname, split.port or DEFAULT_PORT))
        if len(hosts) > 1:  # kombu and Celery read the master's settings from the first URL
            continue
        if split.password:
            master["password"] = unquote(split.password)
        if split.username:
            master["username"] = unquote(split.username)
        db = split.path.strip("/")
        if db:
            try:
                master["db"] = int(db)
            except ValueError:
                raise ConfigError(f"sentinel URL database {db!r} is not a number") from None
    if not hosts:
        raise ConfigError("a sentinel URL names no sentinel")
    return hosts, master


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool that waits for a free connection (as AgentFlow's other pools
    do) instead of raising when all are in use."""


class AsyncBlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """The asyncio :class:`BlockingSentinelPool`."""


def _options(master_name: str | None, sentinel_password: str | None) -> dict[str, Any]:
    if not master_name:
        raise ConfigError(
            "a sentinel:// broker URL needs [broker] sentinel_master (the name given to "
            "`sentinel monitor`), e.g. AGENTFLOW_BROKER__SENTINEL_MASTER=mymaster"
        )
    kwargs: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    if sentinel_password:
        kwargs["password"] = sentinel_password
    return kwargs


def master_client(
    url: str,
    master_name: str | None,
    sentinel_password: str | None = None,
    **pool_kwargs: Any,
) -> redis.Redis:
    """A blocking client on the master that `url`'s sentinels name (``max_connections``,
    ``timeout`` and connection settings go to its pool)."""
    client: redis.Redis = _master_for(Sentinel, redis.Redis, BlockingSentinelPool, url,
                                      master_name, sentinel_password, pool_kwargs)  # fmt: skip
    return client


def async_master_client(
    url: str,
    master_name: str | None,
    sentinel_password: str | None = None,
    **pool_kwargs: Any,
) -> aioredis.Redis:
    """:func:`master_client` for ``redis.asyncio``."""
    client: aioredis.Redis = _master_for(AsyncSentinel, aioredis.Redis, AsyncBlockingSentinelPool,
                                         url, master_name, sentinel_password, pool_kwargs)  # fmt: skip
    return client


def _master_for(sentinel_class: Any, redis_class: Any, pool_class: Any, url: str,
                master_name: str | None, sentinel_password: str | None,
                pool_kwargs: dict[str, Any]) -> Any:  # fmt: skip
    sentinel_kwargs = _options(master_name, sentinel_password)
    hosts, master = parse(url)
    sentinel = sentinel_class(hosts, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        str(master_name),
        redis_class=redis_class,
        connection_pool_class=pool_class,
        **master,
        **pool_kwargs,
    )


def transport_options(master_name: str | None, sentinel_password: str | None) -> dict[str, Any]:
    """kombu's and Celery's Sentinel transport options for these settings."""
    options: dict[str, Any] = {"master_name": master_name}
    _options(master_name, sentinel_password)
    if sentinel_password:
        options["sentinel_kwargs"] = {"password": sentinel_password}
    return options
