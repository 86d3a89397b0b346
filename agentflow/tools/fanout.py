"""Fan-out: an agent's tool calls become a chord that replaces the event's task.

``chord(run_tool × N, resume_event)``: the calls run in parallel on the tools queue; the body
(`agentflow.resume_event`) gets their results and continues the agent. The chord is frozen
with the event's task id, as ``Task.replace`` does, so the body stores its result under the
id the producer holds: `handle.result()` resolves to the agent's final answer. No task ever
waits on another task's result.

Calls of cacheable tools whose result is in Redis do not become tasks: their cached results
travel in the body's context. When nothing is left to run, the body is sent on its own.

On the direct-execution path, :func:`send` publishes the chord without Celery's canvas
machinery: the same messages (built by ``app.amqp.as_task_v2``), the same chord size in
the Redis result backend, written in one pipeline.
"""

from __future__ import annotations

from typing import Any

from celery import chord, group, signals
from celery.backends.redis import RedisBackend
from celery.canvas import Signature
from celery.utils import uuid

from agentflow.broker.connection import get_redis
from agentflow.broker.messages import encode_body, envelope, origin, short_repr
from agentflow.broker.queues import TOOLS_QUEUE, agent_queue
from agentflow.config import Settings
from agentflow.tools import cache
from agentflow.tools.calls import CallTools, ToolCall, ToolResult
from agentflow.tools.registry import get_tool

RESUME_TASK = "agentflow.resume_event"
_CALLS, _CACHED, _STEP = "_agentflow_calls", "_agentflow_cached", "_agentflow_step"


def build(
    app: Any,
    request: CallTools,
    raw_event: Any,
    agent_name: str,
    event_id: str,
    step: int,
    settings: Settings,
    redis_client: Any,
) -> Signature:
    """The signature that replaces the current task: a chord, or the body alone."""
    cacheable = []
    for call in request.calls:
        try:
            if get_tool(call.name).cacheable:
                cacheable.append(call)
        except Exception:
            continue  # an unknown tool: run_tool reports it as that call's error
    hits = cache.lookup(redis_client, settings.broker.key_prefix, cacheable)
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
    resume = app.signature(RESUME_TASK, args=(raw_event, context),
                           queue=agent_queue(agent_name), **shown)  # fmt: skip
    if not to_run:
        return app.signature(RESUME_TASK, args=([], raw_event, context),
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


def send(app: Any, signature: Signature, task_id: str, *, root_id: str | None,
         nesting: int) -> bool:  # fmt: skip
    """Publish a fan-out from :func:`build` as task `task_id`'s replacement; False when the
    app's settings need Celery's own canvas (the caller then uses ``apply_async``).

    What ``chord.apply_async`` sends for this shape, message for message: the body frozen
    with the event's id and a new group id, each call a group member carrying the body as
    its ``chord``, the chord size under the backend's ``.s`` key — but in one Redis
    pipeline (two when the result backend is another Redis), without the canvas's result
    objects and per-message publish machinery. ``before/after_task_publish`` fire as usual.
    """
    if not isinstance(signature, chord) or not _direct_send_ok(app):
        return False
    header = signature.tasks
    members: list[Signature] = list(header.tasks if isinstance(header, group) else header)
    body: Signature = signature.body
    group_id, root = uuid(), root_id or task_id
    body.set(replaced_task_nesting=nesting)
    body.freeze(task_id, group_id=group_id, root_id=root)
    items = [_member_message(app, m, i, group_id, body, root, task_id, nesting)
             for i, m in enumerate(members)]  # fmt: skip
    backend = app.backend
    broker = get_redis()
    size_key = backend.get_key_for_group(group_id, ".s")
    expires = backend.chord_expires or None
    if _same_redis(backend.client, broker):
        pipe = broker.pipeline(transaction=False)
        pipe.set(size_key, len(items), ex=expires)
    else:
        backend.ensure(backend.client.set, (size_key, len(items)), {"ex": expires})
        pipe = broker.pipeline(transaction=False)
    for queue, item, _name, _headers, _body in items:
        pipe.lpush(queue, item)
    pipe.execute()
    if signals.after_task_publish.receivers:
        for queue, _item, name, headers, message_body in items:
            signals.after_task_publish.send(sender=name, body=message_body, headers=headers,
                                            exchange="", routing_key=queue)  # fmt: skip
    return True


_send_ok: dict[int, bool] = {}


def _direct_send_ok(app: Any) -> bool:
    """Whether the app's settings allow :func:`send` (read once per app: a worker's Celery
    settings are fixed once it runs)."""
    ok = _send_ok.get(id(app))
    if ok is None:
        conf = app.conf
        ok = _send_ok[id(app)] = (
            isinstance(app.backend, RedisBackend)
            and conf.task_serializer == "json"
            and not conf.task_compression
            and not conf.task_send_sent_event
            and int(conf.task_protocol or 2) == 2
        )
    return ok


def _same_redis(a: Any, b: Any) -> bool:
    """Whether two redis-py clients talk to the same server and database."""
    return _where(a) == _where(b)


def _where(client: Any) -> tuple[Any, ...]:
    kw = client.connection_pool.connection_kwargs
    return kw.get("host"), kw.get("port"), kw.get("path"), kw.get("db", 0)


def _member_message(
    app: Any, member: Signature, index: int, group_id: str, body: Signature, root: str,
    parent: str, nesting: int,
) -> tuple[str, str, str, dict[str, Any], Any]:  # fmt: skip
    """(queue, queue item, task name, headers, body) for one of the chord's tool calls."""
    name = member.task
    options = member.options
    queue = str(options.get("queue") or TOOLS_QUEUE)
    task = app.tasks.get(name)
    limits = task._get_exec_options() if task is not None else {}
    args, kwargs = tuple(member.args), dict(member.kwargs)
    member_id = uuid()
    message = app.amqp.as_task_v2(
        member_id, name, args=args, kwargs=kwargs, group_id=group_id, group_index=index,
        chord=body, root_id=root, parent_id=parent, replaced_task_nesting=nesting,
        time_limit=limits.get("time_limit"), soft_time_limit=limits.get("soft_time_limit"),
        argsrepr=short_repr(args), kwargsrepr=short_repr(kwargs), origin=origin(),
    )  # fmt: skip
    headers, properties, message_body = message.headers, dict(message.properties), message.body
    properties["reply_to"] = properties.get("reply_to") or app.thread_oid
    if signals.before_task_publish.receivers:
        signals.before_task_publish.send(
            sender=name, body=message_body, exchange="", routing_key=queue, declare=[],
            headers=headers, properties=properties, retry_policy=None,
        )  # fmt: skip
    raw = encode_body(*message_body)
    return queue, envelope(headers, properties, raw, queue), name, headers, message_body
