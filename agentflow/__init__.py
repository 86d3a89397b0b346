"""AgentFlow: AI-agent work as distributed Celery workers on Redis.

`celery -A agentflow worker` finds :data:`app` here. Producers use :class:`Client`.
"""

from __future__ import annotations

from agentflow.agents import Agent, FunctionAgent, agent, agent_names, get_agent
from agentflow.app import app
from agentflow.client import Client, EventHandle
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
from agentflow.models import AgentResult, Event, StateUpdate, Usage
from agentflow.orchestration import FlowHandle, Orchestrator
from agentflow.state import MutableState, State, StateStore
from agentflow.streams import AsyncStreamWriter, StreamWriter, iter_stream
from agentflow.tasks import run_event
from agentflow.tools import CallTools, Tool, ToolCall, ToolResult, get_tool, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentFlowError",
    "AgentResult",
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
    "State",
    "StateStore",
    "StateUpdate",
    "StreamFailed",
    "StreamWriter",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "UnknownAgent",
    "Usage",
    "__version__",
    "agent",
    "agent_names",
    "app",
    "current_run",
    "get_agent",
    "get_settings",
    "get_tool",
    "iter_stream",
    "load_settings",
    "run_event",
    "tool",
]
