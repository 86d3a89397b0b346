"""Traces: with `[monitoring] trace = true`, `agentflow trace` shows each event's steps —
LLM calls with tokens and cache hits, tool calls, chained events, outcome — per event and
per session."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agentflow import Client
from agentflow.mock_llm import MockServer
from tests.conftest import cli_env

pytestmark = pytest.mark.integration


def _trace(ident: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "trace", ident, *args],
                          env=cli_env(), capture_output=True, text=True, timeout=60)  # fmt: skip


def _trace_json(ident: str, kinds_wanted: int) -> dict:
    """The trace as JSON, once its events hold `kinds_wanted` "end" steps (written as each
    run ends, just after its result)."""
    deadline = time.monotonic() + 15
    while True:
        done = _trace(ident, "--json")
        if done.returncode == 0:
            data = json.loads(done.stdout)
            ends = sum(1 for e in _walk(data["events"]) for s in e["steps"] if s["kind"] == "end")
            if ends >= kinds_wanted or time.monotonic() > deadline:
                return data
        elif time.monotonic() > deadline:
            raise AssertionError(done.stderr)
        time.sleep(0.1)


def _walk(events: list[dict]) -> list[dict]:
    out = []
    for e in events:
        out += [e, *_walk(e.get("next", []))]
    return out


def test_a_traced_session_shows_llm_calls_tools_and_chained_events(
    start_worker, client: Client, mock_llm: MockServer
) -> None:
    start_worker(env={
        "AGENTFLOW_MONITORING__TRACE": "true",
        "AGENTFLOW_LLM__PROVIDER": "openai",
        "AGENTFLOW_LLM__OPENAI__ENDPOINT": mock_llm.url + "/v1",
        "AGENTFLOW_LLM__OPENAI__API_KEY": "sk-test",
    })  # fmt: skip
    chats = []
    for _ in range(2):  # one after the other: the second is a cache hit
        chats.append(client.emit({"type": "t", "agent": "chat", "session_id": "s-trace",
                                  "data": {"prompt": "same question"}}))  # fmt: skip
        chats[-1].result(timeout=30)
    fan = client.emit({"type": "t", "agent": "fanout", "session_id": "s-trace",
                       "data": {"calls": 2, "seconds": 0}})  # fmt: skip
    fan.result(timeout=30)
    chain = client.emit({"type": "t", "agent": "relay", "data": {"until": 2}})
    chain.result(timeout=30, follow=True)

    session = _trace_json("s-trace", 4)  # two chats, the fan-out's two runs
    assert session["session"] == "s-trace"
    assert [e["event_id"] for e in session["events"]] == [chats[0].id, chats[1].id, fan.id]
    llm = [s for e in session["events"][:2] for s in e["steps"] if s["kind"] == "llm"]
    assert [s["cache_hit"] for s in llm] == [False, True]
    assert llm[0]["prompt_tokens"] > 0 and llm[0]["model"]
    fan_steps = session["events"][2]["steps"]
    assert [s["name"] for s in fan_steps if s["kind"] == "tool"] == ["mark", "mark"]
    assert [s["outcome"] for s in fan_steps if s["kind"] == "end"] == ["fanned_out", "succeeded"]

    chained = _trace_json(chain.id, 3)
    hops = _walk(chained["events"])
    assert len(hops) == 3 and hops[0]["event_id"] == chain.id
    assert all(h["steps"][0]["kind"] == "start" and h["steps"][0]["agent"] == "relay"
               for h in hops)  # fmt: skip

    tree = _trace(chain.id)
    assert tree.returncode == 0, tree.stderr
    for hop in hops:
        assert hop["event_id"] in tree.stdout
    print(tree.stdout)
    assert "chained to relay" in tree.stdout and "end succeeded" in tree.stdout


def test_no_trace_is_a_clear_error(start_worker, client: Client) -> None:
    start_worker()  # tracing off (the default)
    handle = client.emit({"type": "t", "agent": "echo"})
    handle.result(timeout=30)
    done = _trace(handle.id)
    assert done.returncode != 0 and "trace = true" in done.stderr
