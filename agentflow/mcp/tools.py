"""MCP servers' tools as AgentFlow tools, named ``<server>__<tool>``.

At worker start every configured server's tool list is fetched (best effort) and each tool
is registered with the server's own JSON schema, so the LLM sees it. A call to a
``<server>__<tool>`` name that was not listed (the server was down at start) still goes to
the server, which answers or fails with a clear error.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from agentflow.config import get_settings
from agentflow.errors import MCPError
from agentflow.tools.registry import Tool, add_resolver, register_tool

log = logging.getLogger("agentflow.mcp")
SEP = "__"


class _AnyArgs(BaseModel):
    model_config = {"extra": "allow"}


def tool_name(server: str, tool: str) -> str:
    """The AgentFlow name of an MCP server's tool."""
    return f"{server}{SEP}{tool}"


def _make(server: str, tool: str, description: str, schema: dict[str, Any]) -> Tool:
    async def call(args: dict[str, Any]) -> Any:
        from agentflow.mcp.pool import get_pool

        return await get_pool(server).call_tool(tool, args)

    call.__qualname__ = f"mcp:{server}/{tool}"
    return Tool(name=tool_name(server, tool), fn=call, params=_AnyArgs,
                description=description, json_schema=schema)  # fmt: skip


def resolve(name: str) -> Tool | None:
    """A tool for ``<server>__<tool>`` when `server` is configured (schema unknown)."""
    server, _, tool = name.partition(SEP)
    if server not in get_settings().mcp.servers or not tool:
        return None
    return _make(server, tool, "", {"type": "object"})


add_resolver(resolve)


async def register_server_tools() -> list[str]:
    """Fetch every configured server's tools and register them; the names registered."""
    from agentflow.mcp.pool import get_pool

    names: list[str] = []
    for server in get_settings().mcp.servers:
        try:
            listed = await get_pool(server).list_tools()
        except MCPError as exc:
            log.warning("MCP server %r: tools not listed at start: %s", server, exc)
            continue
        for t in listed:
            registered = register_tool(
                _make(server, t.name, t.description or "", dict(t.inputSchema)), replace=True
            )
            names.append(registered.name)
    return names
