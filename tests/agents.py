"""Agents used by the integration tests; workers load them via `[agents] modules`."""

from __future__ import annotations

import os
import time

from agentflow import Agent, AgentResult, Event, State, StateUpdate, agent
from agentflow._redis.connection import get_redis
from agentflow.config import get_settings
from agentflow.tools import CallTools, tool


@agent("sleepy")
def sleepy(event: Event, state: State) -> dict[str, object]:
    """Sleep `data.seconds`, then return which process ran the event."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:started:{event.id}", os.getpid())
    time.sleep(float(event.data.get("seconds", 0.1)))
    return {"pid": os.getpid(), "slept": event.data.get("seconds", 0.1)}


@agent("boom")
def boom(event: Event, state: State) -> None:
    """Always raise."""
    raise RuntimeError(f"boom: {event.data.get('why', 'no reason')}")


@agent("tally")
def tally(event: Event, state: State) -> AgentResult:
    """Add `data.n` to the session's `total`, and record the event id in state."""
    n = int(event.data.get("n", 1))
    return AgentResult(
        output={"seen": state.get("total", 0)},
        state_updates=StateUpdate(incr={"total": n}, set={f"seen:{event.id}": True}),
    )


@tool("explode")
def explode(why: str = "no reason") -> None:
    """A tool that always raises."""
    raise ValueError(f"exploded: {why}")


@tool("crawl", timeout=0.3)
def crawl(seconds: float = 2.0) -> float:
    """A tool slower than its own 0.3 s time limit."""
    time.sleep(seconds)
    return seconds


@tool("marked_sleep")
def marked_sleep(seconds: float, mark: str) -> float:
    """Sleep, recording each start under `mark` (redelivery shows as a second start)."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:tool:{mark}", os.getpid())
    time.sleep(seconds)
    return seconds


@agent("greedy")
class Greedy(Agent):
    """Asks for a tool every round, forever (max_steps stops it)."""

    max_steps = 2

    def run(self, event: Event, state: State) -> CallTools:
        return CallTools.of(("add", {"a": 1, "b": 1}))

    def resume(self, event: Event, state: State, context: dict, results: list) -> CallTools:
        return CallTools.of(("add", {"a": len(results), "b": 1}))


@agent("upper", blocking=False)
def upper(event: Event, state: State) -> dict[str, str]:
    """Upper-case `data.input.text` (a previous step's output) or `data.text`."""
    source = event.data.get("input") or event.data
    return {"text": str(source.get("text", "")).upper()}


@agent("exclaim", blocking=False)
def exclaim(event: Event, state: State) -> dict[str, str]:
    """Append "!" to `data.input.text` or `data.text`."""
    source = event.data.get("input") or event.data
    return {"text": str(source.get("text", "")) + "!"}


@agent("climb", blocking=False)
def climb(event: Event, state: State) -> dict[str, object]:
    """n + 1 each time it runs; done once n reaches `data.target`."""
    n = int((event.data.get("input") or {}).get("n", 0)) + 1
    return {"n": n, "done": n >= int(event.data.get("target", 3))}


# -- agents for the fault tests (tests/chaos) ---------------------------------------------


@agent("spin", timeout=1.0)
def spin(event: Event, state: State) -> None:
    """Spin at 100 % CPU for ever (its timeout must stop it)."""
    n = 0
    while True:
        n += 1


@agent("nap", timeout=1.0)
def nap(event: Event, state: State) -> None:
    """Sleep in a C call far past its timeout (it can only be abandoned)."""
    time.sleep(float(event.data.get("seconds", 3600)))


@agent("ledger", blocking=False)
def ledger(event: Event, state: State) -> AgentResult:
    """Count one run per event in a Redis list, and add `data.n` to the session total."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:runs:{event.id}", os.getpid())
    n = int(event.data.get("n", 1))
    return AgentResult(output={"n": n}, state_updates=StateUpdate(incr={"total": n}))


@tool("mark")
async def mark(key: str, index: int, seconds: float = 0.0) -> dict[str, object]:
    """Record a tool run under `key`, wait `seconds`, return which call this was."""
    import asyncio

    from agentflow._redis.connection import get_async_redis

    prefix = get_settings().broker.key_prefix
    await get_async_redis().rpush(f"{prefix}:test:toolruns:{key}", index)
    await asyncio.sleep(seconds)
    return {"index": index}


@agent("fanout")
class Fanout(Agent):
    """Asks for `data.calls` tool calls at once; returns the call indices it got back."""

    async def run(self, event: Event, state: State) -> CallTools:
        calls = int(event.data.get("calls", 3))
        seconds = float(event.data.get("seconds", 0.05))
        return CallTools.of(*(("mark", {"key": event.id, "index": i, "seconds": seconds})
                              for i in range(calls)))  # fmt: skip

    async def resume(self, event: Event, state: State, context: dict, results: list) -> dict:
        return {"indices": [r.output["index"] if r.ok else None for r in results],
                "errors": [r.error for r in results if not r.ok]}  # fmt: skip


@agent("long_wait", timeout=120.0)
async def long_wait(event: Event, state: State) -> dict[str, object]:
    """Runs longer than event_timeout (its own timeout is longer); records each start."""
    import asyncio

    from agentflow._redis.connection import get_async_redis

    prefix = get_settings().broker.key_prefix
    await get_async_redis().rpush(f"{prefix}:test:started:{event.id}", os.getpid())
    await asyncio.sleep(float(event.data.get("seconds", 5)))
    return {"pid": os.getpid()}


# -- Celery signals, recorded when the test asks for it -----------------------------------

if os.environ.get("AGENTFLOW_TEST_RECORD_SIGNALS"):
    import json as _json

    from celery import signals as _signals

    def _record(kind: str, **fields: object) -> None:
        prefix = get_settings().broker.key_prefix
        get_redis().rpush(f"{prefix}:test:signals", _json.dumps({"signal": kind, **fields},
                                                                default=str))  # fmt: skip

    @_signals.task_received.connect
    def _on_received(request: object = None, **_: object) -> None:
        _record("task_received", id=getattr(request, "id", None))

    @_signals.task_prerun.connect
    def _on_prerun(sender: object = None, task_id: str = "", task: object = None,
                   args: object = None, kwargs: object = None, **_: object) -> None:  # fmt: skip
        request_id = getattr(getattr(task, "request", None), "id", None)
        _record("task_prerun", id=task_id, task=getattr(task, "name", None),
                request_id=request_id, args=args)  # fmt: skip

    @_signals.task_postrun.connect
    def _on_postrun(sender: object = None, task_id: str = "", state: str = "",
                    retval: object = None, **_: object) -> None:  # fmt: skip
        _record("task_postrun", id=task_id, state=state)

    @_signals.task_success.connect
    def _on_success(sender: object = None, result: object = None, **_: object) -> None:
        request_id = getattr(getattr(sender, "request", None), "id", None)
        _record("task_success", id=request_id, task=getattr(sender, "name", None))

    @_signals.task_failure.connect
    def _on_failure(sender: object = None, task_id: str = "", exception: object = None,
                    einfo: object = None, **_: object) -> None:  # fmt: skip
        _record("task_failure", id=task_id, exception=repr(exception),
                has_einfo=einfo is not None)  # fmt: skip

    @_signals.task_retry.connect
    def _on_retry(sender: object = None, request: object = None, reason: object = None,
                  **_: object) -> None:  # fmt: skip
        _record("task_retry", id=getattr(request, "id", None), reason=str(reason))

    @_signals.task_revoked.connect
    def _on_revoked(sender: object = None, request: object = None, terminated: object = None,
                    **_: object) -> None:  # fmt: skip
        _record("task_revoked", id=getattr(request, "id", None), terminated=terminated)


@agent("slow_async", timeout=60.0)
async def slow_async(event: Event, state: State) -> dict[str, object]:
    """Wait `data.seconds` on the loop (cancellable), recording its start and its end."""
    import asyncio

    from agentflow._redis.connection import get_async_redis

    prefix = get_settings().broker.key_prefix
    client = get_async_redis()
    await client.rpush(f"{prefix}:test:started:{event.id}", os.getpid())
    try:
        await asyncio.sleep(float(event.data.get("seconds", 30)))
    except asyncio.CancelledError:
        await client.rpush(f"{prefix}:test:cancelled:{event.id}", os.getpid())
        raise
    return {"slept": event.data.get("seconds", 30)}


@agent("slow_sync", timeout=60.0)
def slow_sync(event: Event, state: State) -> dict[str, object]:
    """Compute in small steps for `data.seconds`, checking its run context between steps."""
    from agentflow import current_run

    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:started:{event.id}", os.getpid())
    ctx = current_run()
    deadline = time.monotonic() + float(event.data.get("seconds", 30))
    while time.monotonic() < deadline:
        if ctx is not None and ctx.cancelled:
            get_redis().rpush(f"{prefix}:test:cancelled:{event.id}", os.getpid())
            ctx.check()
        time.sleep(0.01)
    return {"done": True}


@agent("spin_on_loop", blocking=False, timeout=1.0)
def spin_on_loop(event: Event, state: State) -> None:
    """Declared non-blocking (so it runs on the worker's event loop) but spins for ever."""
    while True:
        pass


@agent("relay", blocking=False)
def relay(event: Event, state: State) -> AgentResult:
    """Route to itself until the chain's hop reaches `data.until`; record each run's event
    id under its chain root and hop (a duplicated next event would add a second id)."""
    chain = event.metadata.get("chain") or {}
    hop = int(chain.get("hop", 0))
    root = chain.get("root_id") or event.id
    prefix = get_settings().broker.key_prefix
    get_redis().sadd(f"{prefix}:test:relay:{root}:{hop}", event.id)
    until = int(event.data.get("until", 0))
    if hop >= until:
        return AgentResult(output={"hop": hop, "root": root, "parent": chain.get("parent_id")})
    return AgentResult(output={"hop": hop}, route="relay", route_data={"until": until},
                       state_updates=StateUpdate(incr={"hops": 1}))  # fmt: skip


@agent("split", blocking=False)
def split(event: Event, state: State) -> AgentResult:
    """Route its output to two agents at once."""
    return AgentResult(output={"text": "hi"}, route=["upper", "exclaim"],
                       route_data={"text": "hi"})  # fmt: skip


@agent("fixer", blocking=False)
def fixer(event: Event, state: State) -> dict[str, object]:
    """An error handler: record the failure it was sent under the failed event's id; fail
    itself when the failed event asked for that (to show a handler's failure is not routed
    again)."""
    import json

    failure = event.data["failure"]
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:fixed:{failure['event_id']}", json.dumps(failure))
    failed = failure.get("event") if isinstance(failure.get("event"), dict) else {}
    data = failed.get("data") if isinstance(failed.get("data"), dict) else {}
    if data.get("fixer_fails"):
        raise RuntimeError("the handler failed too")
    return {"handled": failure["category"], "session": event.session_id}


@agent("gather", blocking=False)
def gather(event: Event, state: State) -> dict[str, object]:
    """Join the texts of a collaborate step's outputs (`data.input.outputs`), sorted."""
    merged = event.data.get("input") or {}
    texts = sorted(str(o.get("text")) for o in (merged.get("outputs") or {}).values())
    return {"text": " + ".join(texts), "failed": sorted(merged.get("errors") or {})}


@agent("pause")
async def pause(event: Event, state: State) -> dict[str, object]:
    """Wait `data.seconds` on the loop, then count the event under its tenant."""
    import asyncio

    from agentflow._redis.connection import get_async_redis

    await asyncio.sleep(float(event.data.get("seconds", 0.01)))
    prefix = get_settings().broker.key_prefix
    done = await get_async_redis().incr(f"{prefix}:test:pause:{event.tenant}")
    return {"tenant": event.tenant, "done": done}


@agent("flaky", blocking=False)
def flaky(event: Event, state: State) -> dict[str, object]:
    """Fail the first `data.fail_times` runs of the event, then succeed."""
    prefix = get_settings().broker.key_prefix
    runs = int(get_redis().incr(f"{prefix}:test:flaky:{event.id}"))
    if runs <= int(event.data.get("fail_times", 0)):
        raise RuntimeError(f"flaky run {runs}")
    return {"runs": runs}


@agent("crowd")
async def crowd(event: Event, state: State) -> dict[str, object]:
    """Record how many events of this agent run at once and when each started."""
    import asyncio

    from agentflow._redis.connection import get_async_redis

    prefix = get_settings().broker.key_prefix
    r = get_async_redis()
    running = await r.incr(f"{prefix}:test:crowd:running")
    await r.rpush(f"{prefix}:test:crowd:seen", running)
    await r.rpush(f"{prefix}:test:crowd:starts", time.time())
    await asyncio.sleep(float(event.data.get("seconds", 0.1)))
    await r.decr(f"{prefix}:test:crowd:running")
    return {"ok": True}


def _stream(event: Event):
    from agentflow._redis.connection import get_async_redis
    from agentflow.streams import AsyncStreamWriter

    return AsyncStreamWriter(get_async_redis(), event.id, prefix=get_settings().broker.key_prefix)


@agent("narrator")
class Narrator(Agent):
    """Streams tokens, fans `data.tools` sleep calls out (a row per call and per result),
    then streams a closing sentence: what the gateway's SSE and page show."""

    description = "Streams tokens and fans out tool calls (gateway tests and page)."

    async def run(self, event: Event, state: State) -> CallTools:
        writer = _stream(event)
        for token in str(event.data.get("intro", "Looking into it. ")).split(" "):
            if token:
                await writer.add(token + " ")
        seconds = float(event.data.get("seconds", 0.05))
        calls = CallTools.of(*[("sleep", {"seconds": seconds})
                               for _ in range(int(event.data.get("tools", 3)))])  # fmt: skip
        for call in calls.calls:
            await writer.add({"type": "tool_call", "id": call.id, "name": call.name,
                              "args": call.args})  # fmt: skip
        await writer.flush()
        return calls

    async def resume(self, event: Event, state: State, context: dict, results: list) -> dict:
        writer = _stream(event)
        for result in results:
            await writer.add({"type": "tool_result", "id": result.id, "name": result.name,
                              "output": result.output, "error": result.error})  # fmt: skip
        words = [f"w{k}" for k in range(int(event.data.get("words", 5)))]
        for word in words:
            await writer.add(word + " ")
        await writer.close()
        return {"answer": " ".join(words), "tools": len(results)}


@agent("emit_on_loop")
async def emit_on_loop(event: Event, state: State) -> dict[str, object]:
    """Emit a follow-up echo event with the blocking Client, called on the worker's loop (as
    an async agent written carelessly would); return its id."""
    from agentflow import Client

    client = Client()
    try:
        handle = client.emit({"type": "t", "agent": "echo", "data": event.data})
    finally:
        client.close()
    return {"emitted": handle.id}
