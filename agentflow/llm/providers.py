"""Provider dialects: where to send a request, with which headers, and how to read the reply."""

from __future__ import annotations

import json
from typing import Any

from agentflow.config import LLMProviderConfig
from agentflow.errors import ConfigError
from agentflow.llm.streaming import ChatStreamParser, NDJSONChatStream, SSEChatStream
from agentflow.llm.types import ChatResponse
from agentflow.models import Usage
from agentflow.tools.calls import ToolCall


class Provider:
    """OpenAI's API; Azure and Ollama override what differs."""

    name = "openai"

    def __init__(self, config: LLMProviderConfig) -> None:
        if not config.endpoint:
            raise ConfigError(f"[llm.{self.name}] endpoint is not set")
        self.config = config
        self.base_url = config.endpoint.rstrip("/")

    @property
    def key(self) -> str:
        """Identifies this provider and deployment for breaker, rate limit and cache keys."""
        return f"{self.name}:{self.config.deployment or self.config.model or ''}"

    def headers(self) -> dict[str, str]:
        """Auth headers; the key is read here and never logged."""
        key = self.config.api_key
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def chat_url(self) -> str:
        """Where chat requests go."""
        return f"{self.base_url}/chat/completions"

    def embed_url(self) -> str:
        """Where embedding requests go."""
        return f"{self.base_url}/embeddings"

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body for this dialect."""
        return body

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body of a streamed chat call (usage is asked for in the last chunk)."""
        return {**self.chat_body(body), "stream": True, "stream_options": {"include_usage": True}}

    def stream_parser(self) -> ChatStreamParser:
        """A fresh parser for one streamed reply."""
        return SSEChatStream()

    def parse_chat(self, data: dict[str, Any]) -> ChatResponse:
        """Read a non-streaming reply."""
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        calls = [_tool_call(c) for c in message.get("tool_calls") or []]
        u = data.get("usage") or {}
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens", 0)),
                      completion_tokens=int(u.get("completion_tokens", 0)),
                      total_tokens=int(u.get("total_tokens", 0)), llm_calls=1)  # fmt: skip
        return ChatResponse(content=message.get("content") or "", tool_calls=calls, usage=usage,
                            model=str(data.get("model", "")),
                            finish_reason=str(choice.get("finish_reason") or "stop"))  # fmt: skip

    def embed_body(self, texts: list[str], model: str | None) -> dict[str, Any]:
        """The embeddings request body."""
        return {"input": texts, "model": model or self.embedding_model}

    @property
    def embedding_model(self) -> str:
        """The model embeddings use unless a call names one."""
        return self.config.embedding_model or self.config.model or ""

    def embed_usage(self, data: dict[str, Any]) -> int:
        """Prompt tokens an embeddings reply reports."""
        return int((data.get("usage") or {}).get("prompt_tokens", 0))

    def parse_embed(self, data: dict[str, Any]) -> list[list[float]]:
        """Vectors in input order."""
        items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        return [list(map(float, d["embedding"])) for d in items]


class AzureProvider(Provider):
    """Azure OpenAI: deployment in the path, api-version in the query, `api-key` header."""

    name = "azure"

    def __init__(self, config: LLMProviderConfig) -> None:
        super().__init__(config)
        if not config.deployment:
            raise ConfigError("[llm.azure] deployment is not set")
        self.root = f"{self.base_url}/openai/deployments/{config.deployment}"

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"api-key": key.get_secret_value()} if key else {}

    def chat_url(self) -> str:
        return f"{self.root}/chat/completions?api-version={self.config.api_version}"

    def embed_url(self) -> str:
        # On Azure the embeddings model is a deployment of its own: `embedding_model` names it.
        deployment = self.config.embedding_model or self.config.deployment
        root = f"{self.base_url}/openai/deployments/{deployment}"
        return f"{root}/embeddings?api-version={self.config.api_version}"


class OllamaProvider(Provider):
    """Ollama's native API (/api/chat, /api/embed)."""

    name = "ollama"

    def chat_url(self) -> str:
        return f"{self.base_url}/api/chat"

    def embed_url(self) -> str:
        return f"{self.base_url}/api/embed"

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k in ("model", "messages", "tools")}
        out["stream"] = False
        options: dict[str, Any] = {}
        if body.get("temperature") is not None:
            options["temperature"] = body["temperature"]
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        if options:
            out["options"] = options
        return out

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.chat_body(body), "stream": True}

    def stream_parser(self) -> ChatStreamParser:
        return NDJSONChatStream()

    def embed_usage(self, data: dict[str, Any]) -> int:
        return int(data.get("prompt_eval_count", 0))

    def parse_chat(self, data: dict[str, Any]) -> ChatResponse:
        message = data.get("message") or {}
        calls = [ToolCall(id=f"call_{i}", name=c["function"]["name"],
                          args=dict(c["function"].get("arguments") or {}))
                 for i, c in enumerate(message.get("tool_calls") or [])]  # fmt: skip
        p, c = int(data.get("prompt_eval_count", 0)), int(data.get("eval_count", 0))
        usage = Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c, llm_calls=1)
        return ChatResponse(content=message.get("content") or "", tool_calls=calls, usage=usage,
                            model=str(data.get("model", "")),
                            finish_reason="tool_calls" if calls else "stop")  # fmt: skip

    def parse_embed(self, data: dict[str, Any]) -> list[list[float]]:
        return [list(map(float, v)) for v in data.get("embeddings") or []]


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    fn = raw.get("function") or {}
    args = fn.get("arguments") or "{}"
    try:
        parsed = json.loads(args) if isinstance(args, str) else dict(args)
    except json.JSONDecodeError:
        parsed = {"_raw": args}
    return ToolCall(id=str(raw.get("id", "")), name=str(fn.get("name", "")), args=parsed)


PROVIDERS: dict[str, type[Provider]] = {
    "openai": Provider,
    "mock": Provider,
    "azure": AzureProvider,
    "ollama": OllamaProvider,
}
