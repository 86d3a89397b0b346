"""Tools: ``@tool`` functions with JSON schemas, run in parallel as chords (see fanout)."""

from __future__ import annotations

from agentflow.tools.calls import CallTools, ToolCall, ToolResult
from agentflow.tools.registry import Tool, get_tool, register_tool, tool, tool_names, tool_schemas

__all__ = [
    "CallTools",
    "Tool",
    "ToolCall",
    "ToolResult",
    "get_tool",
    "register_tool",
    "tool",
    "tool_names",
    "tool_schemas",
]
