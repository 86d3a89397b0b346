"""Built-in agents: `echo`, `noop` (benchmark W0) and `chat` (one LLM call)."""

from __future__ import annotations

from typing import Any

from agentflow.agents.base import Agent
from agentflow.agents.registry import agent
from agentflow.models import AgentResult, Event, StateUpdate, Usage
from agentflow.state import State


@agent("echo", blocking=False)
def echo(event: Event, state: State) -> AgentResult:
    """Return the event's data; with a session, count the session's events in state."""
    updates = StateUpdate()
    if event.session_id:
        updates.incr["events"] = 1
        if "note" in event.data:
            updates.set[f"note:{event.id}"] = event.data["note"]
    return AgentResult(output={"echo": event.data, "type": event.type}, state_updates=updates)


@agent("noop", blocking=False)
def noop(event: Event, state: State) -> None:
    """Do nothing: measures the pipeline's own cost."""
    return None


@agent("chat")
class ChatAgent(Agent):
    """Send `data.prompt` (or `data.messages`) to the configured LLM; return its reply.

    Optional `data` keys: `model`, `temperature`, `max_tokens`, `cache` (false: skip the
    cache), `cache_ttl` (seconds), `cache_kind` (factual/creative/default), `stream` (true:
    tokens reach the producer through ``handle.stream()`` while the event runs),
    `use_history` (prepend the session's history).
    """

    description = "One LLM chat call through the pooled, cached, rate-limited LLM layer."

    async def run(self, event: Event, state: State) -> AgentResult:
        from agentflow.llm import get_llm

        messages: list[dict[str, Any]] = event.data.get("messages") or [
            {"role": "user", "content": str(event.data.get("prompt", ""))}
        ]
        history = state.get("history")
        if isinstance(history, list) and event.data.get("use_history"):
            messages = [*history, *messages]
        data = event.data
        ttl = data.get("cache_ttl")
        response = await get_llm().chat(
            messages,
            model=data.get("model"),
            temperature=data.get("temperature"),
            max_tokens=data.get("max_tokens"),
            cache=bool(data["cache"]) if "cache" in data else None,
            cache_ttl=float(ttl) if ttl is not None else None,
            cache_kind=data.get("cache_kind"),
            stream_to=event.id if data.get("stream") else None,
            agent=self.name,
        )
        updates = StateUpdate()
        if event.session_id:
            updates.set["history"] = [
                *messages,
                {"role": "assistant", "content": response.content},
            ][-20:]
        usage = response.usage if isinstance(response.usage, Usage) else Usage()
        return AgentResult(output={"content": response.content}, state_updates=updates, usage=usage)
