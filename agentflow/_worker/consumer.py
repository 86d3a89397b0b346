"""A Celery Consumer that dead-letters what it cannot run, and that no message can crash.

Celery's own consumer logs and acks (drops) a message it cannot decode, whose task it does
not know, or that is not a task message; and a message whose fields have the wrong types
(``headers.id`` a list, a body that is not ``[args, kwargs, embed]``) raises inside it and
stops the worker ("Unrecoverable error") — and, restored, stops the next worker too. This
subclass checks every task message before Celery's handler sees it, stores anything that
cannot run in AgentFlow's dead-letter queue with its reason, and acks it only once it is
stored. Whatever Celery's handler still raises for a message (not for the connection) is
dead-lettered the same way. It is installed with the ``worker_consumer`` setting.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message

from agentflow._redis import messages
from agentflow._redis.connection import get_redis
from agentflow._redis.transport import MALFORMED_CONTENT_TYPE, MALFORMED_HEADER
from agentflow.config import get_settings
from agentflow.dlq import DeadLetterQueue

log = logging.getLogger("agentflow.consumer")

_STR_OR_NONE = ("root_id", "parent_id", "group", "shadow", "lang", "origin")


def _dlq() -> DeadLetterQueue:
    return DeadLetterQueue(get_redis(), get_settings().broker.key_prefix)


def dead_letter_message(message: Message, reason: str) -> None:
    """Store a raw broker message in the DLQ; the caller then acks it."""
    delivery = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    headers = message.headers if isinstance(message.headers, dict) else {}
    event: dict[str, Any] | None = None
    try:
        if message.content_type == "application/json":
            decoded = message.decode()
            if isinstance(decoded, list | tuple) and decoded and isinstance(decoded[0], list):
                args = decoded[0]
                if args and isinstance(args[0], dict):
                    event = args[0]
        elif message.content_type == MALFORMED_CONTENT_TYPE:
            # A bare event pushed by hand: keep it as an event so `dlq replay` can emit it.
            candidate = json.loads(message.body)
            if isinstance(candidate, dict) and "type" in candidate:
                event = candidate
    except (Exception, RecursionError):
        event = None
    task_id = headers.get("id")
    _dlq().push(
        reason,
        event=event,
        raw=None if event is not None else message.body,
        queue=delivery.get("routing_key"),
        task_id=task_id if isinstance(task_id, str) else None,
        content_type=message.content_type if isinstance(message.content_type, str) else None,
        source="consumer",
    )
    log.warning("message dead-lettered: %s", reason)


def problem(message: Message, limit: int) -> str | None:
    """Why a task message cannot run, or None. Decodes the body (once: kombu caches it)."""
    body = message.body
    size = len(body) if isinstance(body, bytes | str) else 0
    if size > limit:
        return f"message of {size} bytes exceeds max_event_bytes={limit}"
    headers = message.headers
    if headers is None or "task" not in headers:
        return None  # not protocol 2: Celery's own checks (unknown message, protocol 1)
    if not isinstance(headers, dict):
        return f"message headers are a {type(headers).__name__}, not a JSON object"
    for field in ("task", "id"):
        if not isinstance(headers.get(field), str) or not headers[field]:
            return f"header {field!r} must be a non-empty string, got {headers.get(field)!r}"
    for field in _STR_OR_NONE:
        if headers.get(field) is not None and not isinstance(headers[field], str):
            return f"header {field!r} must be a string, got {type(headers[field]).__name__}"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        return f"header 'retries' must be an integer, got {retries!r}"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple) and len(limits) == 2
        and all(v is None or isinstance(v, int | float) for v in limits)
    ):  # fmt: skip
        return f"header 'timelimit' must be [hard, soft] seconds, got {limits!r}"
    if message.content_type == MALFORMED_CONTENT_TYPE:
        return None  # Celery's decode refuses it: on_decode_error says why
    try:
        payload = messages.decode(message)
    except RecursionError:
        return "message body is nested too deeply to decode"
    except Exception:
        return None  # a decode error: Celery reports it through on_decode_error
    if not (isinstance(payload, list | tuple) and len(payload) == 3):
        return f"message body must be [args, kwargs, embed], got {_shape(payload)}"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return f"message body's args must be a list, got {_shape(args)}"
    if not isinstance(kwargs, dict):
        return f"message body's kwargs must be an object, got {_shape(kwargs)}"
    if embed is not None and not isinstance(embed, dict):
        return f"message body's embed must be an object, got {_shape(embed)}"
    return None


def _shape(value: Any) -> str:
    text = json.dumps(value, default=repr)[:80] if not isinstance(value, bytes) else repr(value)
    return f"{type(value).__name__} {text}"


class Consumer(CeleryConsumer):
    """Celery's consumer, with a dead-letter queue for every message it would drop."""

    reconnect_intervals = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 5.0}
    """How the consumer retries a lost broker: after 0.5 s, then 1, 1.5, ... up to 5 s
    (kombu's defaults, which Celery passes on: 2 s, then 4, 6, ... up to 30). A Sentinel
    failover or a Redis restart is over in seconds; the old schedule added 4–6 s to it."""

    def ensure_connected(self, conn: Any) -> Any:
        """Celery's (re)connection loop, on :attr:`reconnect_intervals`."""
        conn.ensure_connection = functools.partial(conn.ensure_connection,
                                                   **self.reconnect_intervals)  # fmt: skip
        return super().ensure_connected(conn)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """A body that cannot be decoded (bad JSON, a content type we do not accept)."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        reason = headers.get(MALFORMED_HEADER) or (
            f"cannot decode message ({message.content_type}): {exc}"
        )
        dead_letter_message(message, str(reason))
        message.ack()

    def on_unknown_message(self, body: Any, message: Message) -> None:
        """A message that is not a Celery task message (hand-pushed JSON, say)."""
        dead_letter_message(message, "not a task message: no 'task' header")
        message.ack()

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task name no worker here knows."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        dead_letter_message(message, f"unknown task {headers.get('task')!r}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task message whose fields are malformed."""
        dead_letter_message(message, f"invalid task message: {exc}")
        message.ack()

    def create_task_handler(self, promise: Any = None) -> Callable[[Message], None]:
        """Celery's handler, behind the checks above and a net for whatever it raises."""
        handler = (
            super().create_task_handler()
            if promise is None
            else (super().create_task_handler(promise))
        )
        limit = get_settings().runner.max_event_bytes
        connection_errors = tuple(self.connection_errors)

        def on_task_received(message: Message) -> None:
            try:
                reason = problem(message, limit)
                if reason is None:
                    handler(message)
                    return
            except connection_errors:
                raise
            except (Exception, RecursionError) as exc:
                if message.acknowledged:
                    log.exception("error after the message was settled")
                    return
                reason = f"worker could not take the message: {type(exc).__name__}: {exc}"
            dead_letter_message(message, reason[:2000])
            message.ack()

        return on_task_received
