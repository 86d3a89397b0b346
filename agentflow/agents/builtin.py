"""Built-in agents: `echo`, `noop` (benchmark W0) and `chat` (one LLM call)."""

from __future__ import annotations

from typing import Any

from agentflow.agents.base import Agent
from agentflow.agents.registry import agent
from agentflow.models import AgentResult, Event, StateUpdate, Usage
from agentflow.state import State


@agent("echo")
def echo(event: Event, state: State) -> AgentResult:
    """Return the event's data; with a session, count the session's events in state."""
    updates = StateUpdate()
    if event.session_id:
        updates.incr["events"] = 1
        if "note" in event.data:
            updates.set[f"note:{event.id}"] = event.data["note"]
    return AgentResult(output={"echo": event.data, "type": event.type}, state_updates=updates)


@agent("noop")
def noop(event: Event, state: State) -> None:
    """Do nothing: measures the pipeline's own cost."""
    return None


@agent("chat")
class ChatAgent(Agent):
    """Send `data.prompt` (or `data.messages`) to the configured LLM; return its reply."""

    description = "One LLM chat call through the pooled, cached, rate-limited LLM layer."

    async def run(self, event: Event, state: State) -> AgentResult:
        from agentflow.llm import get_llm

        messages: list[dict[str, Any]] = event.data.get("messages") or [
            {"role": "user", "content": str(event.data.get("prompt", ""))}
        ]
        history = state.get("history")
        if isinstance(history, list) and event.data.get("use_history"):
            messages = [*history, *messages]
        response = await get_llm().chat(
            messages,
            model=event.data.get("model"),
            temperature=event.data.get("temperature"),
            cache=bool(event.data.get("cache", True)),
        )
        updates = StateUpdate()
        if event.session_id:
            updates.set["history"] = [
                *messages,
                {"role": "assistant", "content": response.content},
            ][-20:]
        usage = response.usage if isinstance(response.usage, Usage) else Usage()
        return AgentResult(output={"content": response.content}, state_updates=updates, usage=usage)
