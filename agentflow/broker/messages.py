"""Celery task messages as kombu's Redis transport stores them (protocol 2, JSON body).

Where AgentFlow writes messages to Redis itself — the producer's admission script, a
fan-out's tool calls in one pipeline — it builds them with Celery's own
``app.amqp.as_task_v2`` and wraps them here in the envelope kombu's Redis channel reads back
(the same fields kombu's ``Channel.prepare_message`` writes). The queue key is the queue's
name: AgentFlow's queues are direct, priority 0, without a global key prefix.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from kombu.utils.json import JSONEncoder


def encode_body(args: Any, kwargs: Any, embed: dict[str, Any]) -> bytes:
    """A protocol-2 body, ``[args, kwargs, embed]``, with kombu's JSON encoder (as Celery)."""
    return json.dumps([args, kwargs, embed], cls=JSONEncoder, separators=(",", ":")).encode()


def envelope(headers: dict[str, Any], properties: dict[str, Any], body: bytes, queue: str) -> str:
    """The JSON item kombu's Redis transport keeps on `queue` for one task message."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_tag": uuid.uuid4().hex,
                "body_encoding": "base64",
                "delivery_mode": 2,
                "priority": 0,
            },
        },
        separators=(",", ":"),
        default=str,
    )
