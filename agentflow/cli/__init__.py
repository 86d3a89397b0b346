"""The `agentflow` command line (alias `agentcli`): one click group, one module per command."""

from __future__ import annotations

from agentflow.cli._main import main

__all__ = ["main"]
