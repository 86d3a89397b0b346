"""AgentFlow: AI-agent work as distributed Celery workers on Redis.

Producers use :class:`Client` (or :class:`AsyncClient` from asyncio code); agent authors use :func:`agent`, :func:`tool` and the models.
`celery -A agentflow worker` finds the Celery app as ``agentflow.app``, which is loaded on
first use, as is the orchestration API: importing this package for a producer loads no
worker module (``tests/unit/test_imports.py`` keeps it so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentflow.agents import Agent, FunctionAgent, agent, agent_names, get_agent, on_signal
from agentflow.client import AsyncClient, AsyncEventHandle, Client, EventHandle
from agentflow.config import Settings, get_settings, load_settings
from agentflow.context import Cancelled, RunContext, current_run
from agentflow.dlq import DeadLetter, DeadLetterQueue
from agentflow.errors import (
    AgentError,
    AgentFlowError,
    BackpressureError,
    BrokerUnavailable,
    CircuitOpen,
    ConfigError,
    EventCancelled,
    EventFailed,
    EventRefused,
    EventRejected,
    EventTimeout,
    InvalidEvent,
    LLMError,
    LLMRequestError,
    LLMUnavailable,
    MCPError,
    RateLimited,
    ResultLost,
    StreamFailed,
    ToolError,
    UnknownAgent,
)
from agentflow.models import AgentResult, Event, Signal, StateUpdate, Usage, WaitFor
from agentflow.state import MutableState, State
from agentflow.streams import AsyncStreamWriter, StreamWriter, iter_stream
from agentflow.tools import CallTools, Tool, ToolCall, ToolResult, get_tool, tool

if TYPE_CHECKING:
    from celery import Celery

    from agentflow.orchestration import FlowHandle, Orchestrator

__version__ = "0.1.0"

_LAZY = {
    "app": "agentflow.celery_app",
    "FlowHandle": "agentflow.orchestration",
    "Orchestrator": "agentflow.orchestration",
    # Kept importable from here for existing code; not part of the public API (__all__).
    "StateStore": "agentflow.state",
    "run_event": "agentflow._worker.tasks",
}


def __getattr__(name: str) -> Any:
    """Load the Celery app and the orchestration API on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


app: Celery

__all__ = [
    "Agent",
    "AgentError",
    "AgentFlowError",
    "AgentResult",
    "AsyncClient",
    "AsyncEventHandle",
    "AsyncStreamWriter",
    "BackpressureError",
    "BrokerUnavailable",
    "CallTools",
    "Cancelled",
    "CircuitOpen",
    "Client",
    "ConfigError",
    "DeadLetter",
    "DeadLetterQueue",
    "Event",
    "EventCancelled",
    "EventFailed",
    "EventHandle",
    "EventRefused",
    "EventRejected",
    "EventTimeout",
    "FlowHandle",
    "FunctionAgent",
    "InvalidEvent",
    "LLMError",
    "LLMRequestError",
    "LLMUnavailable",
    "MCPError",
    "MutableState",
    "Orchestrator",
    "RateLimited",
    "ResultLost",
    "RunContext",
    "Settings",
    "Signal",
    "State",
    "StateUpdate",
    "StreamFailed",
    "StreamWriter",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "UnknownAgent",
    "Usage",
    "WaitFor",
    "__version__",
    "agent",
    "agent_names",
    "current_run",
    "get_agent",
    "get_settings",
    "get_tool",
    "iter_stream",
    "load_settings",
    "on_signal",
    "tool",
]
