"""`agentflow gateway`: AgentFlow over HTTP — events in, results and Server-Sent Events out.

One Starlette app per process on one :class:`~agentflow.client.AsyncClient`; API keys are
hashed, scoped to agents and rate-limited; errors are RFC 9457 problem documents. Loaded
only by the `agentflow gateway` command (a producer's ``import agentflow`` never loads it).
See docs/gateway.md.
"""

from __future__ import annotations

from agentflow.gateway.app import create_app

__all__ = ["create_app"]
