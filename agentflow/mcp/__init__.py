"""MCP: tools from MCP servers (stdio and streamable HTTP) through the official `mcp` SDK."""

from __future__ import annotations

from agentflow.mcp.pool import MCPPool, get_pool
from agentflow.mcp.tools import register_server_tools, tool_name

__all__ = ["MCPPool", "get_pool", "register_server_tools", "tool_name"]
