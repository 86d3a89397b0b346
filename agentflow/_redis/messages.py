"""Celery task messages as kombu's Redis transport stores them (protocol 2, JSON body).

Where AgentFlow writes messages to Redis itself — the producer's admission script, a
fan-out's tool calls in one pipeline — it builds them with Celery's own
``app.amqp.as_task_v2`` and wraps them here in the envelope kombu's Redis channel reads back
(the same fields kombu's ``Channel.prepare_message`` writes). The queue key is the queue's
name: AgentFlow's queues are direct, priority 0, without a global key prefix.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from celery.utils.nodenames import anon_nodename
from kombu.serialization import registry as kombu_registry
from kombu.utils import json as kombu_json
from kombu.utils.json import JSONEncoder

from agentflow import _json

ENQUEUED_AT_HEADER = "agentflow_enqueued_at"
"""Header the producer stamps with the enqueue time (epoch seconds): queue-wait metrics."""


_BODY_JSON = JSONEncoder(separators=(",", ":"), allow_nan=False)
"""kombu's JSON encoder, made once (``json.dumps`` with options makes one per call)."""


def encode_body(args: Any, kwargs: Any, embed: dict[str, Any]) -> bytes:
    """A protocol-2 body, ``[args, kwargs, embed]``, with kombu's JSON encoder (as Celery)."""
    return _BODY_JSON.encode([args, kwargs, embed]).encode()


def envelope(headers: dict[str, Any], properties: dict[str, Any], body: bytes, queue: str) -> str:
    """The JSON item kombu's Redis transport keeps on `queue` for one task message."""
    return _wrap(body, headers, {
        **properties,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "delivery_mode": 2,
    })  # fmt: skip


def fanout_envelope(body: bytes, headers: dict[str, Any], exchange: str, routing_key: str,
                    delivery_mode: int = 1) -> str:  # fmt: skip
    """The JSON message kombu's Redis transport publishes for a fanout exchange (Celery's
    event messages): the same fields as :func:`envelope`, with the exchange and its routing
    key as kombu's ``basic_publish`` writes them."""
    return _wrap(body, headers, {
        "delivery_mode": delivery_mode,
        "delivery_info": {"exchange": exchange, "routing_key": routing_key},
    })  # fmt: skip


def _wrap(body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """kombu's envelope around `body` (base64), with `properties` and the fields every
    message carries. The base64 body is spliced in, not passed through the JSON encoder
    (it needs no escaping, and is most of a message's bytes)."""
    rest = _json.dumps({
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_tag": os.urandom(16).hex(),  # unique; uuid4() costs 3x more
            "body_encoding": "base64",
            "priority": 0,
        },
    })  # fmt: skip
    return '{"body":"' + base64.b64encode(body).decode() + '",' + rest[1:]


def decode(message: Any) -> Any:
    """A received message's body, as ``message.decode()`` gives it.

    kombu's JSON loader runs a Python ``object_hook`` on every object in the body, to revive
    its ``{"__type__": ..., "__value__": ...}`` tags (datetimes, decimals, UUIDs); a body
    without such a tag is read by :func:`agentflow._json.loads` alone (``json.loads``'s
    values, in Rust). Anything else — another content type or encoding, a tagged value, a
    content type the consumer does not accept — is kombu's.
    """
    body = message.body
    accept = message.accept
    if (
        message.content_type == "application/json"
        and message.content_encoding == "utf-8"
        and (accept is None or "application/json" in accept)
        and isinstance(body, bytes)
        and b'"__type__"' not in body
        and _kombu_json_decoder()
    ):
        try:
            value = _json.loads(body.decode("utf-8"))  # strict UTF-8, as kombu decodes
        except ValueError:
            pass  # kombu says what is wrong, in its own exception
        else:
            # kombu's cache of the decoded body: ``message.payload`` (what Celery's Request
            # reads) then needs no second decode. A contract test watches the name.
            message._decoded_cache = value
            return value
    return message.decode()


def _kombu_json_decoder() -> bool:
    """Whether ``application/json`` still decodes with kombu's own loader (an application
    may register another, e.g. one reading floats as decimals)."""
    decoders = getattr(kombu_registry, "_decoders", None)
    return isinstance(decoders, dict) and decoders.get("application/json") is kombu_json.loads


def short_repr(value: Any, limit: int = 1024) -> str:
    """The ``argsrepr``/``kwargsrepr`` header (what Flower shows): ``repr`` cut at `limit`.

    Celery's own ``saferepr`` walks the value in Python and cost a third of the producer's
    time per event; ``repr`` runs in C.
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def origin() -> str:
    """The ``origin`` header: this process's anonymous node name, computed once per process."""
    global _origin
    if _origin is None:
        _origin = str(anon_nodename())
    return _origin


def _forget_origin() -> None:
    global _origin
    _origin = None


_origin: str | None = None
os.register_at_fork(after_in_child=_forget_origin)  # the name holds the pid
