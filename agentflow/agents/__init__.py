"""Agents: the base class, the registry, built-in agents."""

from agentflow.agents.base import Agent, FunctionAgent
from agentflow.agents.registry import (
    agent,
    agent_names,
    get_agent,
    load_modules,
    on_signal,
    register_agent,
)

__all__ = [
    "Agent",
    "FunctionAgent",
    "agent",
    "agent_names",
    "get_agent",
    "load_modules",
    "on_signal",
    "register_agent",
]
