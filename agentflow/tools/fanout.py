"""Fan-out: an agent's tool calls become a chord that replaces the event's task.

``chord(run_tool × N, resume_event)``: the calls run in parallel on the tools queue; the body
(`agentflow.resume_event`) gets their results and continues the agent. The chord is frozen
with the event's task id, as ``Task.replace`` does, so the body stores its result under the
id the producer holds: `handle.result()` resolves to the agent's final answer. No task ever
waits on another task's result.

Calls of cacheable tools whose result is in Redis do not become tasks: their cached results
travel in the body's context. When nothing is left to run, the body is sent on its own.

On the asyncio pool, :func:`send_async` publishes the chord without Celery's canvas
machinery: the same messages (built by ``app.amqp.as_task_v2``), the same chord size in
the Redis result backend, written in one pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import chord, group
from celery.canvas import Signature
from celery.utils import uuid

from agentflow._redis import publish
from agentflow._redis.connection import get_async_redis, get_redis
from agentflow._redis.queues import TOOLS_QUEUE, agent_queue
from agentflow.config import Settings
from agentflow.tools import cache
from agentflow.tools.calls import CallTools, ToolCall, ToolResult
from agentflow.tools.registry import get_tool

if TYPE_CHECKING:
    from agentflow._redis.shared_connection import SharedConnection

RESUME_TASK = "agentflow.resume_event"
_CALLS, _CACHED, _STEP = "_agentflow_calls", "_agentflow_cached", "_agentflow_step"


async def build(
    app: Any,
    request: CallTools,
    raw_event: Any,
    agent_name: str,
    event_id: str,
    step: int,
    settings: Settings,
) -> Signature:
    """The signature that replaces the current task: a chord, or the body alone (every
    call's result was cached)."""
    cacheable = []
    for call in request.calls:
        try:
            if get_tool(call.name).cacheable:
                cacheable.append(call)
        except Exception:
            continue  # an unknown tool: run_tool reports it as that call's error
    hits = await cache.lookup_async(get_async_redis(), settings.broker.key_prefix, cacheable)
    to_run = [c for c in request.calls if c.id not in hits]
    context = {
        **request.context,
        _CALLS: [c.model_dump() for c in request.calls],
        _CACHED: {k: v.model_dump(mode="json") for k, v in hits.items()},
        _STEP: step,
    }
    # The body's argsrepr (what Flower shows) is set here: Celery would otherwise walk the
    # tool results and the event with saferepr when the last call completes.
    shown = {"argsrepr": f"(<{len(request.calls)} tool results>, <event {event_id}>, <context>)",
             "kwargsrepr": "{}"}  # fmt: skip
    resume = ResumeSignature(RESUME_TASK, args=(raw_event, context), app=app,
                             queue=agent_queue(agent_name), **shown)  # fmt: skip
    if not to_run:
        return ResumeSignature(RESUME_TASK, args=([], raw_event, context), app=app,
                               queue=agent_queue(agent_name), **shown)  # fmt: skip
    per_tool = settings.tools.queue_per_tool
    header = []
    for call in to_run:
        try:
            queue = get_tool(call.name).queue_name(per_tool)
        except Exception:
            queue = TOOLS_QUEUE
        header.append(app.signature("agentflow.run_tool", args=(call.model_dump(), event_id),
                                    queue=queue))  # fmt: skip
    return chord(group(header), resume)


async def send(
    request: CallTools,
    raw_event: Any,
    agent_name: str,
    task_id: str,
    step: int,
    settings: Settings,
    *,
    headers: dict[str, Any],
    settle: tuple[str, str, str] | None = None,
    also: Callable[[Any], None] | None = None,
    connection: SharedConnection,
) -> bool:
    """Build and send the fan-out that replaces task `task_id`; True when the same
    transaction settled the replaced message (see :func:`send_async`). `also` queues more
    commands in that transaction (the runner gives up the event's claim there);
    `connection`, the loop's shared connection, carries it (see :func:`send_async`)."""
    from agentflow.celery_app import app

    signature = await build(app, request, raw_event, agent_name, task_id, step, settings)
    nesting = int(headers.get("replaced_task_nesting") or 0) + 1
    root_id = headers.get("root_id")
    if await send_async(app, signature, task_id, root_id=root_id, nesting=nesting,
                        settle=settle, also=also, connection=connection):  # fmt: skip
        return settle is not None
    # Celery's canvas (another result backend, compression, task-sent events...): what
    # ``Task.replace`` sends, from a helper thread (it blocks).
    signature.freeze(task_id, root_id=root_id)
    signature.set(replaced_task_nesting=nesting)
    await asyncio.to_thread(signature.apply_async)  # in this context: tracing follows
    if also is not None:
        pipe = get_async_redis().pipeline(transaction=True)
        also(pipe)
        await pipe.execute()
    return False


def results_in_order(raw_results: Any, context: dict[str, Any]) -> list[ToolResult]:
    """The chord's results and the cached ones, in the order the agent asked for them."""
    by_id: dict[str, ToolResult] = {}
    for item in raw_results or []:
        if isinstance(item, dict):
            r = ToolResult.model_validate(item)
            by_id[r.id] = r
    for key, item in (context.get(_CACHED) or {}).items():
        by_id[key] = ToolResult.model_validate(item)
    ordered = []
    for raw_call in context.get(_CALLS) or []:
        call = ToolCall.model_validate(raw_call)
        ordered.append(by_id.get(call.id) or ToolResult(
            id=call.id, name=call.name, error="no result came back for this call"))  # fmt: skip
    return ordered


def user_context(context: dict[str, Any]) -> dict[str, Any]:
    """The agent's own context, without AgentFlow's bookkeeping keys."""
    return {k: v for k, v in context.items() if k not in (_CALLS, _CACHED, _STEP)}


def step_of(context: dict[str, Any]) -> int:
    """Which fan-out this continuation follows (1 for the first)."""
    return int(context.get(_STEP) or 1)


async def send_async(app: Any, signature: Signature, task_id: str, *, root_id: str | None,
                     nesting: int, connection: SharedConnection,
                     settle: tuple[str, str, str] | None = None,
                     also: Callable[[Any], None] | None = None) -> bool:  # fmt: skip
    """Publish a fan-out from :func:`build` as task `task_id`'s replacement; False when the
    app's settings need Celery's own canvas (the caller then uses ``apply_async``).

    What ``chord.apply_async`` sends for this shape, message for message: the body frozen
    with the event's id and a new group id, each call a group member carrying the body as
    its ``chord``, the chord size under the backend's ``.s`` key — but in one Redis
    transaction (the result backend must be the broker's database), without the canvas's
    result objects and per-message publish machinery (:mod:`agentflow._redis.publish`). With
    `settle` (kombu's unacked hash, its index, a delivery tag) the same transaction removes
    the replaced task's message from kombu's unacked records. It goes out as one MULTI/EXEC
    among the worker loop's other calls on `connection`, the loop's
    :class:`~agentflow._redis.shared_connection.SharedConnection` (a pipeline of its own, a
    pooled connection taken and given back, was 5.5 % of a W2 worker's time): the loop runs
    other events while it is on its way.
    """
    if not _direct_ok(app, signature):
        return False
    pipe = get_async_redis().pipeline(transaction=True)  # builds the commands; never run
    if also is not None:
        also(pipe)
    if isinstance(signature, chord):
        messages = _stage(pipe, app, signature, task_id, root_id, nesting, settle)
    else:  # every result was cached: the body alone
        messages = [_body_message(app, signature, task_id, root_id, nesting)]
        _settle(pipe, settle)
    await publish.push_atomically(connection, pipe, messages)
    return True


def _direct_ok(app: Any, signature: Signature) -> bool:
    return (
        isinstance(signature, chord | ResumeSignature)
        and publish.direct_publish_ok(app)
        and publish.same_redis(app.backend.client, get_redis())
    )


def _body_message(app: Any, body: Signature, task_id: str, root_id: str | None,
                  nesting: int) -> publish.Outgoing:  # fmt: skip
    """The continuation's message when it is sent alone (no call left to run)."""
    return publish.task_message(
        app, body.task, tuple(body.args), dict(body.kwargs), task_id=task_id,
        queue=str(body.options.get("queue")), root_id=root_id or task_id,
        replaced_task_nesting=nesting, argsrepr=body.options.get("argsrepr"),
        kwargsrepr=body.options.get("kwargsrepr"),
    )  # fmt: skip


def _stage(pipe: Any, app: Any, signature: Signature, task_id: str, root_id: str | None,
           nesting: int, settle: tuple[str, str, str] | None) -> list[publish.Outgoing]:  # fmt: skip
    """Queue the fan-out's chord size and settle on `pipe`; its messages,
    for the caller to push on the same pipe — one transaction: the chord's size is set, its
    calls go out and the replaced message is settled, or none of it happens."""
    backend = app.backend
    header = signature.tasks
    members: list[Signature] = list(header.tasks if isinstance(header, group) else header)
    body: Signature = signature.body
    group_id, root = uuid(), root_id or task_id
    body.set(replaced_task_nesting=nesting)
    body.freeze(task_id, group_id=group_id, root_id=root)
    messages = []
    for i, m in enumerate(members):
        queue = str(m.options.get("queue") or TOOLS_QUEUE)
        messages.append(publish.task_message(
            app, m.task, tuple(m.args), dict(m.kwargs), task_id=uuid(), queue=queue,
            group_id=group_id, group_index=i, chord=body, root_id=root, parent_id=task_id,
            replaced_task_nesting=nesting,
        ))  # fmt: skip
    pipe.set(backend.get_key_for_group(group_id, ".s"), len(messages),
             ex=backend.chord_expires or None)  # fmt: skip
    _settle(pipe, settle)
    return messages


def _settle(pipe: Any, settle: tuple[str, str, str] | None) -> None:
    """Queue the removal of the replaced message from kombu's unacked records on `pipe`."""
    if settle is not None:
        unacked, index, tag = settle
        pipe.hdel(unacked, tag)
        pipe.zrem(index, tag)


RESUME_TYPE = "agentflow_resume"
"""The continuation's signature type in Celery's canvas registry."""
DIRECT_OPTIONS = frozenset({
    "task_id", "group_id", "group_index", "root_id", "parent_id", "queue",
    "replaced_task_nesting", "argsrepr", "kwargsrepr", "reply_to",
})  # fmt: skip
"""Options the continuation's own publish handles; any other keeps Celery's path."""


@Signature.register_type(name=RESUME_TYPE)
class ResumeSignature(Signature):
    """The continuation's signature (Celery's canvas type registry knows it by name, so the
    chord's copy comes back as this class): when the last tool call completes, Celery's
    backend sends it with :func:`agentflow._redis.publish.push` — the same message, without
    ``send_task``'s per-message machinery. Options Celery's path handles differently (links,
    countdown, expiry, ...) keep Celery's path.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self["subtask_type"] = RESUME_TYPE

    @classmethod
    def from_dict(cls, d: Any, app: Any = None) -> ResumeSignature:
        return cls(d, app=app)

    def direct_message(self, args: Any = None, kwargs: Any = None, route_name: Any = None,
                       **options: Any) -> publish.Outgoing | None:  # fmt: skip
        """The message :meth:`apply_async` pushes itself, or None when Celery's own path
        must send it (an option that path handles differently)."""
        app = self.app
        options = {k: v for k, v in options.items() if v is not None}
        merged_args, merged_kwargs, merged = self._merge(args or (), kwargs or {}, options)
        merged = {k: v for k, v in merged.items() if v is not None}
        if (
            route_name is not None
            or not publish.direct_publish_ok(app)
            or not merged.get("queue")
            or not set(merged) <= DIRECT_OPTIONS
        ):
            return None
        fields = {k: v for k, v in merged.items() if k not in ("task_id", "queue", "reply_to")}
        return publish.task_message(app, self.task, tuple(merged_args), dict(merged_kwargs),
                                    task_id=merged.get("task_id") or uuid(),
                                    queue=str(merged["queue"]), **fields)  # fmt: skip

    def apply_async(self, args: Any = None, kwargs: Any = None, route_name: Any = None,
                    **options: Any) -> Any:  # fmt: skip
        message = self.direct_message(args, kwargs, route_name, **options)
        if message is None:
            return super().apply_async(args, kwargs, route_name, **options)
        publish.push(get_redis().pipeline(transaction=False), [message])
        return self.app.AsyncResult(message.headers["id"])
