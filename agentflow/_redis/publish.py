"""Publish Celery task messages straight to Redis: Celery's own messages, one pipeline.

A fan-out sends several messages at once (its tool calls, then its continuation), from the
worker's event loop. Celery's canvas and ``send_task`` build result objects, declare queues
and take a producer per message; for AgentFlow's own tasks that machinery cost a third of a
worker's time. Here the messages are built by ``app.amqp.as_task_v2`` (the same headers and
body Celery sends), wrapped as kombu's Redis transport stores them
(:mod:`agentflow._redis.messages`) and pushed in one pipeline; ``before_task_publish`` and
``after_task_publish`` fire for each as usual.

Only for apps whose settings Celery's path would not change: Redis result backend, JSON,
no compression, no task-sent events (:func:`direct_publish_ok`).
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any, NamedTuple

from celery import signals
from celery.backends.redis import RedisBackend

from agentflow._redis.doorbell import ring
from agentflow._redis.messages import encode_body, envelope, origin, short_repr


class Outgoing(NamedTuple):
    """One message ready to push: its queue, the queue item, and what the signals carry."""

    queue: str
    item: str
    name: str
    headers: dict[str, Any]
    body: Any
    context: contextvars.Context | None = None
    """Where its ``before_task_publish`` ran (a tracer's publish span is current there);
    ``after_task_publish`` runs there too, so each message's span stays apart."""


_ok: dict[int, bool] = {}


def direct_publish_ok(app: Any) -> bool:
    """Whether this app's messages may be published here rather than through Celery (read
    once per app: a worker's Celery settings are fixed once it runs)."""
    ok = _ok.get(id(app))
    if ok is None:
        conf = app.conf
        ok = _ok[id(app)] = (
            isinstance(app.backend, RedisBackend)
            and conf.task_serializer == "json"
            and not conf.task_compression
            and not conf.task_send_sent_event
            and int(conf.task_protocol or 2) == 2
        )
    return ok


def task_message(
    app: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, task_id: str,
    queue: str, **fields: Any,
) -> Outgoing:  # fmt: skip
    """Task `name`'s message for `queue`; `fields` are ``as_task_v2``'s (group_id, chord,
    root_id, ...). The task's own time limits apply, as with ``apply_async``."""
    task = app.tasks.get(name)
    limits = task._get_exec_options() if task is not None else {}
    fields.setdefault("time_limit", limits.get("time_limit"))
    fields.setdefault("soft_time_limit", limits.get("soft_time_limit"))
    fields.setdefault("argsrepr", short_repr(args))
    fields.setdefault("kwargsrepr", short_repr(kwargs))
    message = app.amqp.as_task_v2(task_id, name, args=args, kwargs=kwargs, origin=origin(),
                                  **fields)  # fmt: skip
    headers, properties, body = message.headers, dict(message.properties), message.body
    properties["reply_to"] = properties.get("reply_to") or app.thread_oid
    context = None
    if signals.before_task_publish.receivers:
        context = contextvars.copy_context()
        context.run(functools.partial(
            signals.before_task_publish.send, sender=name, body=body, exchange="",
            routing_key=queue, declare=[], headers=headers, properties=properties,
            retry_policy=None,
        ))  # fmt: skip
    return Outgoing(queue, envelope(headers, properties, encode_body(*body), queue), name,
                    headers, body, context)  # fmt: skip


def _stage(pipe: Any, messages: list[Outgoing]) -> None:
    counts: dict[str, int] = {}
    for m in messages:
        pipe.lpush(m.queue, m.item)
        counts[m.queue] = counts.get(m.queue, 0) + 1
    for queue, n in counts.items():
        ring(pipe, [queue], n)


def push(pipe: Any, messages: list[Outgoing]) -> None:
    """LPUSH `messages` on `pipe` (which may carry other commands) and ring their queues'
    doorbells, run it, fire the ``after_task_publish`` signals."""
    _stage(pipe, messages)
    pipe.execute()
    published(messages)


async def push_atomically(connection: Any, pipe: Any, messages: list[Outgoing]) -> None:
    """:func:`push` as one MULTI/EXEC on `connection`, a
    :class:`~agentflow._redis.shared_connection.SharedConnection` (the worker loop's): no
    pooled connection of its own. `pipe`, a ``redis.asyncio`` transaction pipeline, only
    builds the commands (redis-py's ``command_stack``); it is not executed. Raises the first
    error reply, as ``pipe.execute()`` would. Sent once, never retried: a reply that comes
    late (Redis stalled, a WAIT for a missing replica) fails the call, but Redis may have
    run the transaction, and a second run would push the messages twice. The caller's
    message goes back to its queue then; when the transaction did run, it settled that
    message too, so nothing is restored and nothing runs twice."""
    _stage(pipe, messages)
    commands = [("MULTI",), *(args for args, _options in pipe.command_stack), ("EXEC",)]
    replies = await connection.execute_once(commands)
    executed = replies[-1]
    for reply in [*replies, *(executed if isinstance(executed, list) else ())]:
        if isinstance(reply, Exception):
            raise reply
    published(messages)


def published(messages: list[Outgoing]) -> None:
    """Fire ``after_task_publish`` for messages now on their queues."""
    if signals.after_task_publish.receivers:
        for m in messages:
            send = functools.partial(signals.after_task_publish.send, sender=m.name, body=m.body,
                                     headers=m.headers, exchange="", routing_key=m.queue)  # fmt: skip
            if m.context is not None:
                m.context.run(send)
            else:
                send()


def same_redis(a: Any, b: Any) -> bool:
    """Whether two redis-py clients talk to the same server and database."""
    return _where(a) == _where(b)


def _where(client: Any) -> tuple[Any, ...]:
    pool = client.connection_pool
    kw = pool.connection_kwargs
    service = getattr(pool, "service_name", None)  # a Sentinel-managed pool
    return kw.get("host"), kw.get("port"), kw.get("path"), kw.get("db", 0), service
