"""What an LLM call returns."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentflow.models import Usage
from agentflow.tools.calls import ToolCall


class ChatResponse(BaseModel):
    """One chat completion, normalised across providers."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "stop"
    cached: bool = False
