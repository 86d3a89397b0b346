"""A Celery Consumer that dead-letters what it cannot run instead of dropping it.

Celery's own consumer logs and acks (drops) a message it cannot decode, whose task it does
not know, or that is not a task message at all. This subclass first stores such a message in
AgentFlow's dead-letter queue with its reason, and it refuses oversized messages before they
reach the pool. It is installed with the `worker_consumer` setting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message

from agentflow.broker.connection import get_redis
from agentflow.broker.transport import MALFORMED_CONTENT_TYPE, MALFORMED_HEADER
from agentflow.config import get_settings
from agentflow.dlq import DeadLetterQueue

log = logging.getLogger("agentflow.consumer")


def _dlq() -> DeadLetterQueue:
    return DeadLetterQueue(get_redis(), get_settings().broker.key_prefix)


def dead_letter_message(message: Message, reason: str) -> None:
    """Store a raw broker message in the DLQ; the caller then acks it."""
    delivery = message.delivery_info or {}
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
    except Exception:
        event = None
    _dlq().push(
        reason,
        event=event,
        raw=None if event is not None else message.body,
        queue=delivery.get("routing_key"),
        task_id=headers.get("id"),
        content_type=message.content_type,
        source="consumer",
    )
    log.warning("message dead-lettered: %s", reason)


class Consumer(CeleryConsumer):
    """Celery's consumer, with a dead-letter queue for every message it would drop."""

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
        """Celery's handler, behind a size check that dead-letters oversized messages."""
        handler = (
            super().create_task_handler()
            if promise is None
            else (super().create_task_handler(promise))
        )
        limit = get_settings().runner.max_event_bytes

        def on_task_received(message: Message) -> None:
            body = message.body
            size = len(body) if isinstance(body, bytes | str) else 0
            if size > limit:
                dead_letter_message(
                    message, f"message of {size} bytes exceeds max_event_bytes={limit}"
                )
                message.ack()
                return
            handler(message)

        return on_task_received
