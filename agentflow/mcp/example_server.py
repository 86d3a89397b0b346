"""A small MCP server that ships for tests and the demo (official `mcp` SDK, FastMCP).

    python -m agentflow.mcp.example_server                     # stdio
    python -m agentflow.mcp.example_server --transport http --port 8931   # streamable HTTP

Tools: `add`, `echo`, `whoami` (the server's process id: shows which pooled connection
answered) and `slow` (sleeps).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.fastmcp import FastMCP


def build(host: str = "127.0.0.1", port: int = 8931) -> FastMCP:
    """The server with its tools."""
    server = FastMCP("agentflow-example", host=host, port=port, log_level="WARNING")

    @server.tool()
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami() -> int:
        """The process id of this server."""
        return os.getpid()

    @server.tool()
    async def slow(seconds: float = 1.0) -> float:
        """Sleep, then return the seconds slept."""
        await asyncio.sleep(seconds)
        return seconds

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="AgentFlow's example MCP server")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931)
    args = parser.parse_args()
    server = build(args.host, args.port)
    server.run("streamable-http" if args.transport == "http" else "stdio")


if __name__ == "__main__":
    main()
