"""What one gateway process holds: settings, keys, the AsyncClient, the stream hub, metrics."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aredis

from agentflow.client import AsyncClient
from agentflow.config import Settings
from agentflow.gateway.auth import KeyRing
from agentflow.gateway.hub import StreamHub
from agentflow.gateway.metrics import GatewayMetrics


class Gateway:
    """The process's shared parts; the client and hub exist between startup and shutdown."""

    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self.settings = settings
        self.keys = keys
        self.metrics = GatewayMetrics()
        self._client: AsyncClient | None = None
        self._hub: StreamHub | None = None
        self._hub_redis: aredis.Redis | None = None
        self._sync_client: Any = None

    @property
    def client(self) -> AsyncClient:
        """The process's AsyncClient."""
        if self._client is None:
            raise RuntimeError("the gateway is not started")
        return self._client

    @property
    def hub(self) -> StreamHub:
        """The process's stream reader."""
        if self._hub is None:
            raise RuntimeError("the gateway is not started")
        return self._hub

    async def start(self) -> None:
        """Load the configured agent modules, open the client and start the hub."""
        from agentflow.agents.registry import load_modules

        load_modules(self.settings.agents.modules)
        self._client = AsyncClient(settings=self.settings)
        # The hub blocks in XREAD: a connection of its own, not one of the client's pool.
        self._hub_redis = aredis.Redis.from_url(self._client.app.conf.broker_url,
                                                socket_keepalive=True)  # fmt: skip
        self._hub = StreamHub(self._hub_redis)
        self._hub.start()

    async def stop(self) -> None:
        """Stop the hub and close the clients."""
        if self._hub is not None:
            await self._hub.stop()
        if self._hub_redis is not None:
            await self._hub_redis.aclose()
        if self._client is not None:
            await self._client.close()
        if self._sync_client is not None:
            self._sync_client.close()

    def sync_client(self) -> Any:
        """A blocking :class:`~agentflow.client.Client` for the DLQ (run on a thread)."""
        if self._sync_client is None:
            from agentflow.client import Client

            self._sync_client = Client(app=self.client.app, settings=self.settings)
        return self._sync_client

    # -- what the gateway recorded of its events ------------------------------------------
    async def record(self, event_id: str, agent: str, dedup: str, *, new: bool = True) -> bool:
        """Remember who an event belongs to; False when `new` and the id is taken."""
        value = json.dumps({"agent": agent, "dedup": dedup})
        ttl = int(self.settings.broker.result_expires)
        done = await self.client.redis.set(self.client.keys.gateway_event(event_id), value,
                                           ex=ttl, nx=new)  # fmt: skip
        return bool(done)

    async def forget(self, event_id: str) -> None:
        """Drop the record of an event that was not emitted after all."""
        await self.client.redis.delete(self.client.keys.gateway_event(event_id))

    async def recorded(self, event_id: str) -> dict[str, str] | None:
        """The record of an event the gateway emitted, or None."""
        raw = await self.client.redis.get(self.client.keys.gateway_event(event_id))
        return None if raw is None else dict(json.loads(raw))
