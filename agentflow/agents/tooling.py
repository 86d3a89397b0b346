"""Built-in agents that use tools: `assistant` (LLM ⇄ tools loop), `tools` and `bench_fanout`.

- ``assistant``: sends `data.prompt` to the LLM with the schemas of `data.tools` (all
  registered tools by default); each round of tool calls the model asks for fans out as a
  chord, and the results go back to the model as ``role: tool`` messages, until it answers
  or `max_steps` rounds were taken. Each round is its own task: a crash loses one round.
- ``tools``: runs `data.calls` (``[{"name", "args"}]``) in parallel and returns their results.
- ``bench_fanout``: workload W2 — `data.tools` (3) calls of `data.tool` (``sleep``) with
  ``seconds = data.tool_seconds`` (20 ms) in parallel, then one LLM call (cache off); a
  failed call fails the event.
"""

from __future__ import annotations

import json
from typing import Any

from agentflow.agents.base import Agent
from agentflow.agents.registry import agent
from agentflow.errors import AgentError
from agentflow.models import AgentResult, Event, Usage
from agentflow.state import State
from agentflow.tools import CallTools, ToolCall, ToolResult, tool_names, tool_schemas


def _usage(raw: Any) -> Usage:
    return Usage.model_validate(raw) if isinstance(raw, dict) else Usage()


def _add_usage(total: Usage, more: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        total_tokens=total.total_tokens + more.total_tokens,
        cost_usd=total.cost_usd + more.cost_usd,
        llm_calls=total.llm_calls + more.llm_calls,
        cache_hits=total.cache_hits + more.cache_hits,
    )


def _tool_message(result: ToolResult) -> dict[str, Any]:
    content = result.output if result.ok else {"error": result.error}
    return {"role": "tool", "tool_call_id": result.id,
            "content": json.dumps(content, default=str)}  # fmt: skip


@agent("assistant")
class AssistantAgent(Agent):
    """An LLM that calls tools, round after round, until it answers."""

    description = "LLM with function calling; tool rounds fan out as chords."

    async def _ask(self, event: Event, messages: list[dict[str, Any]], usage: Usage) -> Any:
        from agentflow.llm import get_llm

        names = event.data.get("tools")
        schemas = tool_schemas(list(names) if names is not None else tool_names())
        response = await get_llm().chat(
            messages, tools=schemas or None, model=event.data.get("model"),
            temperature=event.data.get("temperature"), cache=bool(event.data.get("cache", True)),
            agent=self.name,
        )  # fmt: skip
        usage = _add_usage(usage, response.usage)
        if not response.tool_calls:
            return AgentResult(output={"content": response.content,
                                       "steps": sum(1 for m in messages if m["role"] == "tool")},
                               usage=usage)  # fmt: skip
        assistant = {
            "role": "assistant", "content": response.content or None,
            "tool_calls": [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": json.dumps(c.args)}}
                for c in response.tool_calls],
        }  # fmt: skip
        calls = list(response.tool_calls)
        return CallTools(calls, {"messages": [*messages, assistant],
                                 "usage": usage.model_dump()})  # fmt: skip

    async def run(self, event: Event, state: State) -> Any:
        """First round: the prompt (or `data.messages`) with the tools' schemas."""
        messages = event.data.get("messages") or [
            {"role": "user", "content": str(event.data.get("prompt", ""))}
        ]
        return await self._ask(event, list(messages), Usage())

    async def resume(
        self, event: Event, state: State, context: dict[str, Any], results: list[ToolResult]
    ) -> Any:
        """Next round: the tool results as ``role: tool`` messages."""
        messages = [*context["messages"], *(_tool_message(r) for r in results)]
        return await self._ask(event, messages, _usage(context.get("usage")))


@agent("tools")
class ToolsAgent(Agent):
    """Run `data.calls` in parallel; the output is their results, in order."""

    description = "Parallel tool calls without an LLM."
    blocking = False

    def run(self, event: Event, state: State) -> Any:
        """Fan out every call in `data.calls`."""
        calls = [ToolCall.model_validate(c) for c in event.data.get("calls") or []]
        return CallTools(calls)

    def resume(
        self, event: Event, state: State, context: dict[str, Any], results: list[ToolResult]
    ) -> Any:
        """Return the results as plain data."""
        return {"results": [r.model_dump(mode="json") for r in results]}


@agent("bench_fanout")
class BenchFanoutAgent(Agent):
    """Workload W2: parallel `sleep` tools, then one LLM call."""

    description = "W2: 3 parallel 20 ms tools, then one 50 ms LLM call."
    blocking = False

    def run(self, event: Event, state: State) -> Any:
        """Fan out `data.tools` calls of `data.tool` (``sleep``) for `data.tool_seconds`."""
        seconds = float(event.data.get("tool_seconds", 0.02))
        n = int(event.data.get("tools", 3))
        name = str(event.data.get("tool", "sleep"))
        return CallTools([ToolCall(name=name, args={"seconds": seconds}) for _ in range(n)])

    async def resume(
        self, event: Event, state: State, context: dict[str, Any], results: list[ToolResult]
    ) -> Any:
        """One LLM call with the tools' results (a failed call fails the event)."""
        from agentflow.llm import get_llm

        failed = [r.error for r in results if not r.ok]
        if failed:
            raise AgentError(f"{len(failed)} of {len(results)} tool calls failed: {failed[0]}")

        summary = ", ".join(str(r.output) for r in results)
        prompt = f"{event.data.get('prompt', '')} [tools: {summary}]"
        response = await get_llm().chat([{"role": "user", "content": prompt}], cache=False,
                                         agent=self.name)  # fmt: skip
        return AgentResult(output={"content": response.content, "tools": len(results)},
                           usage=response.usage)  # fmt: skip
