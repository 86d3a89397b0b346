"""The producer side: emit events, wait for their results, cancel them.

`Client` validates events, admits them under the backpressure bounds and publishes them in
one round trip; `EventHandle` is one published event. `AsyncClient` and `AsyncEventHandle`
do the same from asyncio code. Nothing here loads the worker side.
"""

from __future__ import annotations

from agentflow.client._async_client import AsyncClient, AsyncEventHandle
from agentflow.client._client import Client, EventHandle, known_agents_key

__all__ = ["AsyncClient", "AsyncEventHandle", "Client", "EventHandle", "known_agents_key"]
