"""What an LLM call returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agentflow.models import Usage


class ToolCall(BaseModel):
    """A function call the model asks for."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatResponse(BaseModel):
    """One chat completion, normalised across providers."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "stop"
    cached: bool = False
