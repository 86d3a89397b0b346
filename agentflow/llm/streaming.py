"""Reading streamed chat replies: OpenAI/Azure server-sent events and Ollama's NDJSON.

A parser takes the reply line by line, hands back each piece of text as it arrives, and
assembles the whole :class:`~agentflow.llm.types.ChatResponse` (content, tool calls whose
arguments arrive in fragments, finish reason, usage) once the stream ends.
"""

from __future__ import annotations

import json
from typing import Any

from agentflow.llm.types import ChatResponse
from agentflow.models import Usage
from agentflow.tools.calls import ToolCall


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


class SSEChatStream:
    """OpenAI-style ``data: {chunk}`` lines ending with ``data: [DONE]``."""

    def __init__(self) -> None:
        self.done = False
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish = "stop"
        self._model = ""
        self._usage: dict[str, Any] = {}

    def feed_line(self, line: str) -> str | None:
        """Consume one line; return the text it adds, if any."""
        line = line.strip()
        if not line.startswith("data:"):
            return None  # blank separators, comments, `event:` / `id:` fields
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        chunk = json.loads(data)
        self._model = chunk.get("model") or self._model
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        piece: str | None = None
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                piece = (piece or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(int(call.get("index", 0)),
                                              {"id": "", "name": "", "arguments": ""})  # fmt: skip
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                args = fn.get("arguments")
                if isinstance(args, str):
                    slot["arguments"] += args
                elif isinstance(args, dict):
                    slot["arguments"] = json.dumps(args)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        if piece:
            self._content.append(piece)
        return piece

    def response(self) -> ChatResponse:
        """The whole reply, assembled."""
        calls = [ToolCall(id=c["id"], name=c["name"], args=_arguments(c["arguments"]))
                 for _, c in sorted(self._calls.items())]  # fmt: skip
        u = self._usage
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens", 0)),
                      completion_tokens=int(u.get("completion_tokens", 0)),
                      total_tokens=int(u.get("total_tokens", 0)), llm_calls=1)  # fmt: skip
        return ChatResponse(content="".join(self._content), tool_calls=calls, usage=usage,
                            model=self._model, finish_reason=self._finish)  # fmt: skip


class NDJSONChatStream:
    """Ollama's ``/api/chat`` stream: one JSON object per line, the last with ``done: true``."""

    def __init__(self) -> None:
        self.done = False
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        self._model = ""
        self._prompt = 0
        self._completion = 0

    def feed_line(self, line: str) -> str | None:
        """Consume one line; return the text it adds, if any."""
        if not line.strip():
            return None
        chunk = json.loads(line)
        self._model = chunk.get("model") or self._model
        message = chunk.get("message") or {}
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            self._calls.append(ToolCall(id=f"call_{len(self._calls)}", name=fn.get("name", ""),
                                        args=_arguments(fn.get("arguments"))))  # fmt: skip
        if chunk.get("done"):
            self.done = True
            self._prompt = int(chunk.get("prompt_eval_count", 0))
            self._completion = int(chunk.get("eval_count", 0))
        piece = message.get("content") or None
        if piece:
            self._content.append(piece)
        return piece

    def response(self) -> ChatResponse:
        """The whole reply, assembled."""
        p, c = self._prompt, self._completion
        usage = Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c, llm_calls=1)
        return ChatResponse(content="".join(self._content), tool_calls=self._calls, usage=usage,
                            model=self._model,
                            finish_reason="tool_calls" if self._calls else "stop")  # fmt: skip


ChatStreamParser = SSEChatStream | NDJSONChatStream
