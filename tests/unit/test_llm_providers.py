"""Provider dialects and streamed replies: URLs, headers, bodies, parsing (no network)."""

from __future__ import annotations

import json

import pytest

from agentflow.config import load_settings
from agentflow.errors import ConfigError
from agentflow.llm.providers import AzureProvider, OllamaProvider, Provider
from agentflow.llm.streaming import NDJSONChatStream, SSEChatStream


def settings(**llm: object):  # type: ignore[no-untyped-def]
    return load_settings(llm=llm)


def test_openai_urls_headers_and_parsing() -> None:
    cfg = settings(openai={"endpoint": "http://h/v1/", "api_key": "sk-secret"}).llm.openai
    p = Provider(cfg)
    assert p.chat_url() == "http://h/v1/chat/completions"
    assert p.embed_url() == "http://h/v1/embeddings"
    assert p.headers() == {"authorization": "Bearer sk-secret"}
    assert p.embed_body(["a"], None) == {"input": ["a"], "model": "text-embedding-3-small"}
    reply = p.parse_chat({
        "model": "gpt-4o-mini",
        "choices": [{"message": {"content": None, "tool_calls": [
            {"id": "c1", "function": {"name": "search", "arguments": '{"q": "redis"}'}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    })  # fmt: skip
    assert reply.tool_calls[0].name == "search"
    assert reply.tool_calls[0].args == {"q": "redis"}
    assert reply.finish_reason == "tool_calls"
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens, reply.usage.llm_calls) == (
        7,
        10,
        1,
    )


def test_api_key_is_masked_in_repr_and_config_dump() -> None:
    s = settings(openai={"api_key": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s.llm.openai)
    assert "sk-very-secret" not in json.dumps(s.public_dict())


def test_azure_needs_a_deployment_and_puts_it_in_the_path() -> None:
    with pytest.raises(ConfigError, match="deployment"):
        AzureProvider(settings(azure={"endpoint": "http://az"}).llm.azure)
    cfg = settings(azure={"endpoint": "http://az", "deployment": "gpt4o", "api_key": "k",
                          "embedding_model": "emb"}).llm.azure  # fmt: skip
    p = AzureProvider(cfg)
    assert (
        p.chat_url() == "http://az/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"
    )
    assert p.embed_url().startswith("http://az/openai/deployments/emb/embeddings?api-version=")
    assert p.headers() == {"api-key": "k"}
    assert p.key == "azure:gpt4o"


def test_ollama_body_and_replies() -> None:
    p = OllamaProvider(settings().llm.ollama)
    body = p.chat_body({"model": "m", "messages": [], "temperature": 0.2, "max_tokens": 9})
    assert body == {"model": "m", "messages": [], "stream": False,
                    "options": {"temperature": 0.2, "num_predict": 9}}  # fmt: skip
    assert p.stream_body({"model": "m", "messages": []})["stream"] is True
    reply = p.parse_chat({"model": "m", "message": {"content": "hi"}, "prompt_eval_count": 4,
                          "eval_count": 2})  # fmt: skip
    assert (reply.content, reply.usage.total_tokens) == ("hi", 6)
    assert p.parse_embed({"embeddings": [[1, 2], [3, 4]]}) == [[1.0, 2.0], [3.0, 4.0]]


def test_sse_stream_assembles_text_tool_calls_and_usage() -> None:
    chunks = [
        {"model": "m", "choices": [{"delta": {"content": "Hel"}}]},
        {"model": "m", "choices": [{"delta": {"content": "lo"}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "c0", "function": {"name": "f", "arguments": '{"a"'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ]  # fmt: skip
    parser = SSEChatStream()
    pieces = []
    for chunk in chunks:
        for line in (f"data: {json.dumps(chunk)}", ""):
            piece = parser.feed_line(line)
            if piece:
                pieces.append(piece)
    assert not parser.done
    parser.feed_line("data: [DONE]")
    assert parser.done
    reply = parser.response()
    assert pieces == ["Hel", "lo"]
    assert reply.content == "Hello"
    assert reply.tool_calls[0].args == {"a": 1}
    assert reply.finish_reason == "tool_calls"
    assert reply.usage.total_tokens == 7 and reply.model == "m"


def test_ndjson_stream_of_ollama() -> None:
    parser = NDJSONChatStream()
    lines = [{"model": "l", "message": {"content": "a"}, "done": False},
             {"model": "l", "message": {"content": "b"}, "done": False},
             {"model": "l", "message": {"content": ""}, "done": True,
              "prompt_eval_count": 3, "eval_count": 2}]  # fmt: skip
    pieces = [parser.feed_line(json.dumps(x)) for x in lines]
    assert pieces == ["a", "b", None] and parser.done
    assert parser.response().content == "ab"
    assert parser.response().usage.total_tokens == 5
