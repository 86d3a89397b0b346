"""The LLM layer: every agent's LLM calls go through :func:`get_llm`.

Pooled httpx clients per provider per worker process, retries with exponential backoff and
jitter (Retry-After honoured), a circuit breaker shared through Redis, and a Redis response
cache with single flight. See docs/llm.md.
"""

from __future__ import annotations

import os
from typing import Any

from agentflow import _aio
from agentflow.config import get_settings
from agentflow.llm.client import LLMClient
from agentflow.llm.types import ChatResponse
from agentflow.tools.calls import ToolCall

_clients: dict[tuple[int, str], LLMClient] = {}


def get_llm(provider: str | None = None) -> LLMClient:
    """The process's client for `provider` (default: the running agent's
    ``[agents.<name>] llm_provider``, else `[llm] provider`); call on the event loop."""
    if provider is None:
        provider = _policy().llm_provider
    name = provider or get_settings().llm.provider
    return _aio.per_process(_clients, name, lambda: LLMClient(name))


async def warm() -> int:
    """Open the configured provider's `min_connections` (called at worker process start)."""
    settings = get_settings()
    provider = settings.llm.provider
    config = getattr(settings.llm, "openai" if provider == "mock" else provider)
    if config.min_connections <= 0 or not config.endpoint:
        return 0
    return await get_llm().warm()


async def aclose_all() -> None:
    """Close every pooled client of this process (worker shutdown)."""
    pid = os.getpid()
    for key in [k for k in _clients if k[0] == pid]:
        await _clients.pop(key).aclose()


__all__ = ["ChatResponse", "LLMClient", "ToolCall", "aclose_all", "get_llm", "warm"]


def _policy() -> Any:
    """The policy of the agent the caller runs for (every field unset outside an agent)."""
    from agentflow.context import current_run

    run = current_run()
    return get_settings().agents.policy(run.agent if run is not None else "")
