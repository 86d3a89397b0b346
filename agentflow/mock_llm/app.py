"""The mock LLM's Starlette application: OpenAI, Azure OpenAI and Ollama paths."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentflow.durations import parse_duration

_CALL = re.compile(r"^\s*CALL\s+([A-Za-z0-9_.-]+)\s*(\{.*\})?\s*$", re.MULTILINE)
EMBEDDING_DIM = 16


@dataclass
class MockOptions:
    """Server-wide behaviour; each can be overridden per request by an ``x-mock-*`` header."""

    latency: float = 0.05
    jitter: float = 0.0
    error_rate: float = 0.0
    rate_limit_every: int = 0
    """Answer every N-th request with 429 (0: never)."""
    retry_after: float = 1.0
    stream_chunk_delay: float = 0.0
    fail_next: int = 0
    """The next N model requests fail with `fail_status` (then behaviour returns to normal)."""
    fail_status: int = 500
    tool_fail_next: int = 0
    """The next N ``/tool`` requests fail with `fail_status` (a flaky API, for retries)."""
    counts: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    """Model requests being answered right now (inside their latency)."""
    max_in_flight: int = 0
    """The most model requests in flight at once since the last reset."""
    tool_in_flight: int = 0
    """``/tool`` requests being answered right now."""
    tool_max_in_flight: int = 0
    """The most ``/tool`` requests in flight at once since the last reset."""


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _after_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return messages[i + 1 :]
    return list(messages)


def script_rounds(text: str) -> list[list[tuple[str, str]]]:
    """The rounds of ``CALL name {args}`` directives in `text`; a ``THEN`` line splits rounds."""
    rounds: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if line.strip().upper() == "THEN":
            rounds.append([])
        elif match := _CALL.match(line):
            rounds[-1].append((match.group(1), match.group(2) or "{}"))
    return [r for r in rounds if r]


def _scripted_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The next round of tool calls the last user message scripts, if any is left unanswered.

    Rounds already answered are counted as assistant messages with ``tool_calls`` after the
    last user message (or 1 when only ``role: tool`` messages follow it).
    """
    messages = body.get("messages") or []
    if not body.get("tools"):
        return []
    rounds = script_rounds(_last_user(messages))
    tail = _after_last_user(messages)
    done = sum(1 for m in tail if m.get("role") == "assistant" and m.get("tool_calls"))
    if not done and any(m.get("role") == "tool" for m in tail):
        done = 1
    if done >= len(rounds):
        return []
    calls = []
    for i, (name, args) in enumerate(rounds[done]):
        digest = hashlib.sha1(f"{done}:{i}:{name}:{args}".encode()).hexdigest()[:8]
        calls.append({"id": f"call_{done}_{i}_{digest}", "type": "function",
                      "function": {"name": name, "arguments": args}})  # fmt: skip
    return calls


def _reply_text(messages: list[dict[str, Any]]) -> str:
    tail = _after_last_user(messages)
    tool_results = [str(m.get("content")) for m in tail if m.get("role") == "tool"]
    if tool_results:
        return "mock: tool results: " + " | ".join(tool_results)
    return "mock: " + _last_user(messages)


def _embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255.0, 6) for b in digest[:EMBEDDING_DIM]]


def _azure_check(request: Request) -> Response | None:
    """Azure paths answer 400 without the ``api-version`` query parameter, like Azure does."""
    if "deployment" in request.path_params and "api-version" not in request.query_params:
        return JSONResponse({"error": {"code": "BadRequest",
                                       "message": "api-version query parameter is required"}},
                            status_code=400)  # fmt: skip
    return None


def create_app(options: MockOptions | None = None) -> Starlette:
    """Build the application around `options` (shared, so a test can change them live)."""
    opts = options or MockOptions()

    async def _gate(request: Request, path_kind: str) -> Response | None:
        opts.counts[path_kind] += 1
        opts.counts["total"] += 1
        headers = request.headers
        latency = opts.latency
        if "x-mock-latency" in headers:
            latency = parse_duration(headers["x-mock-latency"])
        if opts.jitter:
            latency += random.uniform(0, opts.jitter)
        opts.in_flight += 1
        opts.max_in_flight = max(opts.max_in_flight, opts.in_flight)
        try:
            if latency > 0:
                await asyncio.sleep(latency)
        finally:
            opts.in_flight -= 1
        status = int(headers.get("x-mock-status", "0") or 0)
        retry_after = headers.get("x-mock-retry-after") or f"{opts.retry_after:g}"
        if not status and opts.fail_next > 0:
            opts.fail_next -= 1
            status = opts.fail_status
        if (
            not status
            and opts.rate_limit_every
            and opts.counts["total"] % opts.rate_limit_every == 0
        ):
            status = 429
        if not status and opts.error_rate and random.random() < opts.error_rate:
            status = 500
        if status:
            opts.counts[f"status_{status}"] += 1
            extra = {"retry-after": retry_after} if status in (429, 503) else {}
            return JSONResponse({"error": {"message": f"mock error {status}", "code": status}},
                                status_code=status, headers=extra)  # fmt: skip
        return None

    def _completion(body: dict[str, Any], model: str) -> dict[str, Any]:
        messages = body.get("messages") or []
        calls = _scripted_calls(body)
        text = None if calls else _reply_text(messages)
        prompt = sum(_tokens(json.dumps(m.get("content"))) for m in messages)
        completion = _tokens(text or json.dumps(calls))
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }  # fmt: skip

    async def _stream(body: dict[str, Any], model: str) -> AsyncIterator[bytes]:
        full = _completion(body, model)
        message = full["choices"][0]["message"]
        base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
                "model": model}  # fmt: skip
        words = (message["content"] or "").split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                          "finish_reason": None}]}  # fmt: skip
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if opts.stream_chunk_delay:
                await asyncio.sleep(opts.stream_chunk_delay)
        if message.get("tool_calls"):
            chunk = {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": i, **c} for i, c in enumerate(message["tool_calls"])]},
                "finish_reason": None}]}  # fmt: skip
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        last = {**base, "choices": [{"index": 0, "delta": {},
                                     "finish_reason": full["choices"][0]["finish_reason"]}],
                "usage": full["usage"]}  # fmt: skip
        yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def chat(request: Request) -> Response:
        body = await request.json()
        deployment = request.path_params.get("deployment")
        if (refused := _azure_check(request)) is not None:
            return refused
        kind = "azure_chat" if deployment is not None else "chat"
        if (failed := await _gate(request, kind)) is not None:
            return failed
        model = str(body.get("model") or deployment or "mock-model")
        if body.get("stream"):
            return StreamingResponse(_stream(body, model), media_type="text/event-stream")
        return JSONResponse(_completion(body, model))

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        deployment = request.path_params.get("deployment")
        if (refused := _azure_check(request)) is not None:
            return refused
        kind = "azure_embeddings" if deployment is not None else "embeddings"
        if (failed := await _gate(request, kind)) is not None:
            return failed
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        opts.counts["embedding_inputs"] += len(texts)
        data = [{"object": "embedding", "index": i, "embedding": _embedding(str(t))}
                for i, t in enumerate(texts)]  # fmt: skip
        tokens = sum(_tokens(str(t)) for t in texts)
        return JSONResponse({"object": "list", "data": data,
                             "model": body.get("model") or "mock-embedding",
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    async def ollama_chat(request: Request) -> Response:
        body = await request.json()
        if (failed := await _gate(request, "ollama_chat")) is not None:
            return failed
        full = _completion(body, str(body.get("model") or "mock-model"))
        message = full["choices"][0]["message"]
        return JSONResponse({
            "model": full["model"], "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": {"role": "assistant", "content": message["content"] or "",
                        **({"tool_calls": [{"function": {"name": c["function"]["name"],
                            "arguments": json.loads(c["function"]["arguments"])}}
                            for c in message.get("tool_calls", [])]}
                           if message.get("tool_calls") else {})},
            "done": True, "prompt_eval_count": full["usage"]["prompt_tokens"],
            "eval_count": full["usage"]["completion_tokens"],
        })  # fmt: skip

    async def ollama_embed(request: Request) -> Response:
        body = await request.json()
        if (failed := await _gate(request, "ollama_embed")) is not None:
            return failed
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        opts.counts["embedding_inputs"] += len(texts)
        return JSONResponse({"model": body.get("model") or "mock-embedding",
                             "embeddings": [_embedding(str(t)) for t in texts]})  # fmt: skip

    async def tool(request: Request) -> Response:
        """``/tool``: a stand-in for the HTTP API a tool calls. Waits ``?latency=`` (or the
        ``x-mock-latency`` header; default none) and answers with what it was sent;
        ``?status=`` answers with that status instead."""
        opts.counts["tool"] += 1
        query = request.query_params
        latency = query.get("latency") or request.headers.get("x-mock-latency")
        opts.tool_in_flight += 1
        opts.tool_max_in_flight = max(opts.tool_max_in_flight, opts.tool_in_flight)
        try:
            if latency:
                await asyncio.sleep(parse_duration(latency))
        finally:
            opts.tool_in_flight -= 1
        status = int(query.get("status", "0") or 0)
        if not status and opts.tool_fail_next > 0:
            opts.tool_fail_next -= 1
            status = opts.fail_status
        if status:
            opts.counts[f"tool_status_{status}"] += 1
            return JSONResponse({"error": f"mock error {status}"}, status_code=status)
        body = await request.body()
        return JSONResponse({"ok": True, "method": request.method, "query": dict(query),
                             "body": body.decode(errors="replace"),
                             "user_agent": request.headers.get("user-agent")})  # fmt: skip

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> Response:
        if request.method == "POST":
            opts.counts.clear()
            opts.max_in_flight = opts.in_flight
            opts.tool_max_in_flight = opts.tool_in_flight
            return JSONResponse({"reset": True})
        return JSONResponse({"total": 0, **opts.counts, "in_flight": opts.in_flight,
                             "max_in_flight": opts.max_in_flight,
                             "tool_max_in_flight": opts.tool_max_in_flight})  # fmt: skip

    async def configure(request: Request) -> Response:
        """POST /config {"latency": "10ms", "error_rate": 0.1, ...}: change behaviour live."""
        body = await request.json()
        for key in ("latency", "jitter", "retry_after", "stream_chunk_delay"):
            if key in body:
                setattr(opts, key, parse_duration(body[key]))
        if "error_rate" in body:
            opts.error_rate = float(body["error_rate"])
        for key in ("fail_next", "fail_status"):
            if key in body:
                setattr(opts, key, int(body[key]))
        if "tool_fail_next" in body:
            opts.tool_fail_next = int(body["tool_fail_next"])
        if "rate_limit_every" in body:
            opts.rate_limit_every = int(body["rate_limit_every"])
        return JSONResponse({"ok": True})

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/openai/deployments/{deployment}/chat/completions", chat, methods=["POST"]),
        Route("/openai/deployments/{deployment}/embeddings", embeddings, methods=["POST"]),
        Route("/api/chat", ollama_chat, methods=["POST"]),
        Route("/api/embed", ollama_embed, methods=["POST"]),
        Route("/tool", tool, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/health", health),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", stats, methods=["POST"]),
        Route("/config", configure, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.options = opts
    return app
