"""The plain Celery app the benchmark submitter measures AgentFlow against.

What an engineer would write without AgentFlow, doing the same work per event: a no-op task
(W0), a task making one chat call to the same mock LLM over a shared sync httpx client (W1),
a chord of three sleeping tasks whose body makes the chat call (W2), and the same chord with
three tasks that each GET the mock server's ``/tool`` (W2http). Redis broker and result backend, JSON, otherwise Celery's defaults. It imports nothing
of AgentFlow, so none of AgentFlow's signal handlers or settings touch it.

Run by scripts/benchmark_submitter.py as
``celery -A plain_celery_app worker`` (default: prefork, one process per core) and
``celery -A plain_celery_app worker -P threads -c 200`` (tuned for I/O), from this folder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import httpx
from celery import Celery

BROKER = os.environ.get("PLAIN_CELERY_URL", "redis://127.0.0.1:6379/13")
LLM_URL = os.environ.get("PLAIN_CELERY_LLM_URL", "http://127.0.0.1:8765/v1")

app = Celery("plain", broker=BROKER, backend=BROKER)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])

_lock = threading.Lock()
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = httpx.Client(
                    limits=httpx.Limits(max_connections=400, max_keepalive_connections=400),
                    timeout=30,
                )
    return _client


@app.task(name="plain.noop")
def noop(event: dict[str, Any]) -> None:
    """W0: nothing."""
    return None


@app.task(name="plain.sleep")
def sleep(seconds: float) -> float:
    """W2's tool: wait `seconds`."""
    time.sleep(seconds)
    return seconds


TOOL_URL = httpx.URL(LLM_URL).copy_with(path="/tool", query=None)


@app.task(name="plain.http_tool")
def http_tool(seconds: float) -> bool:
    """W2http's tool: a GET to the mock server's ``/tool``, which answers after `seconds`."""
    response = _http().get(TOOL_URL, params={"latency": f"{seconds}s"})
    response.raise_for_status()
    return bool(response.json()["ok"])


@app.task(name="plain.after_tools")
def after_tools(results: list[Any], event: dict[str, Any]) -> dict[str, Any]:
    """W2's chord body: one chat call with the tools' results."""
    reply = chat(event)
    return {"content": reply["content"], "tools": len(results)}


_redis_lock = threading.Lock()
_redis: Any = None


def _state() -> Any:
    global _redis
    if _redis is None:
        with _redis_lock:
            if _redis is None:
                import redis

                _redis = redis.Redis.from_url(BROKER)
    return _redis


@app.task(name="plain.chat_session")
def chat_session(event: dict[str, Any]) -> dict[str, Any]:
    """W3: read the session's state, one chat completion, write the history back."""
    key = f"plain:state:{event.get('session_id')}"
    state = _state()
    history = json.loads(state.hget(key, "history") or b"[]")
    reply = chat(event)
    history = [*history, {"role": "assistant", "content": reply["content"]}][-20:]
    pipe = state.pipeline()
    pipe.hset(key, "history", json.dumps(history))
    pipe.expire(key, 3600)
    pipe.execute()
    return reply


@app.task(name="plain.chat")
def chat(event: dict[str, Any]) -> dict[str, Any]:
    """W1: one chat completion, the reply's text as the result."""
    prompt = (event.get("data") or {}).get("prompt", "")
    response = _http().post(
        LLM_URL + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
    )
    response.raise_for_status()
    return {"content": response.json()["choices"][0]["message"]["content"]}
