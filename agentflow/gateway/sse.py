"""An event's progress as Server-Sent Events.

Each item the event streams becomes one SSE message whose ``id:`` is its Redis stream entry
id, so a client that reconnects with ``Last-Event-ID`` resumes right after it. The message's
``event:`` says what the item is: ``token`` (a string: LLM tokens), ``tool_call`` /
``tool_result`` (an object whose ``type`` says so), ``item`` (anything else). The stream
ends with one of ``result`` (the agent's result), ``failed`` (with the reason) or
``cancelled``, whose id is ``end``: a client resuming after it gets 204 (EventSource stops).
A comment line is sent every `heartbeat` seconds so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import redis.asyncio as aredis

from agentflow.client import AsyncClient
from agentflow.errors import EventCancelled, EventFailed
from agentflow.gateway.hub import Entry, StreamHub
from agentflow.streams import stream_key

END_ID = "end"
"""The id of the final message; resuming after it answers 204."""
_KINDS = frozenset({"token", "tool_call", "tool_result"})
_DONE = None


def message(event: str, data: Any, msg_id: str | None = None) -> bytes:
    """One SSE message (the JSON `data` has no newline, so it is one ``data:`` line)."""
    head = f"id: {msg_id}\n" if msg_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def item_message(entry_id: bytes, raw: bytes) -> bytes:
    """The SSE message of one streamed item."""
    item = json.loads(raw)
    if isinstance(item, str):
        kind = "token"
    elif isinstance(item, dict) and item.get("type") in _KINDS:
        kind = str(item["type"])
    else:
        kind = "item"
    return message(kind, item, entry_id.decode())


def final_message(client: AsyncClient, event_id: str, meta: dict[str, Any] | None,
                  error: BaseException | None = None) -> bytes:  # fmt: skip
    """The closing message for a finished event: result, failed or cancelled."""
    try:
        if error is not None:
            raise error
        assert meta is not None
        result = client._outcome(event_id, meta)
    except EventCancelled:
        return message("cancelled", {"id": event_id, "status": "cancelled"}, END_ID)
    except EventFailed as exc:
        return message("failed", {"id": event_id, "status": "failed", "error": exc.reason},
                       END_ID)  # fmt: skip
    return message("result", {"id": event_id, "status": "succeeded",
                              "result": result.model_dump(mode="json")}, END_ID)  # fmt: skip


async def event_stream(
    client: AsyncClient,
    hub: StreamHub,
    event_id: str,
    after: bytes,
    *,
    heartbeat: float = 15.0,
    idle_timeout: float = 3600.0,
    on_open: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body for `event_id`, resuming after stream entry `after`."""
    key = stream_key(event_id, client.settings.broker.key_prefix)
    sub = hub.subscribe(key, after)
    waiter = asyncio.ensure_future(client.results.wait(event_id, None))
    waiter.add_done_callback(lambda _: sub.queue.put_nowait(_DONE))
    last = after
    idle = 0.0
    result_first = False
    if on_open is not None:
        on_open(1)
    try:
        yield b": stream of " + event_id.encode() + b"\n\n"
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    batch = await sub.queue.get()
            except TimeoutError:
                idle += heartbeat
                if idle >= idle_timeout:
                    return
                yield b": keep-alive\n\n"
                continue
            idle = 0.0
            if batch is _DONE:
                result_first = True
                break
            out, ended, cancelled = _render(batch)
            if out:
                yield b"".join(out)
            last = batch[-1][0]
            if cancelled:
                yield final_message(client, event_id, None, EventCancelled(event_id, "cancelled"))
                return
            if ended:
                break
        hub.unsubscribe(sub)
        if result_first:
            # The result came first: what the event streamed before it is in Redis by now.
            for entries in await _rest(client.redis, key, last):
                out, ended, _cancelled = _render(entries)
                if out:
                    yield b"".join(out)
                if ended:
                    break
        try:
            meta = await waiter
        except EventFailed as exc:  # the result is lost (Redis came back empty)
            yield final_message(client, event_id, None, exc)
            return
        yield final_message(client, event_id, meta)
    finally:
        hub.unsubscribe(sub)
        waiter.cancel()
        if on_open is not None:
            on_open(-1)


def _render(entries: list[Entry]) -> tuple[list[bytes], bool, bool]:
    """Messages for `entries` up to an end entry: (messages, ended, cancelled)."""
    out: list[bytes] = []
    for entry_id, fields in entries:
        if b"end" in fields:
            return out, True, bool(fields.get(b"cancelled"))
        out.append(item_message(entry_id, fields[b"d"]))
    return out, False, False


async def _rest(client: aredis.Redis, key: str, after: bytes) -> list[list[Entry]]:
    """What the stream holds after `after`, without blocking."""
    batches: list[list[Entry]] = []
    while True:
        reply = cast(list[Any], await client.xread({key: after}, count=1000))
        if not reply:
            return batches
        entries = reply[0][1]
        batches.append(entries)
        after = entries[-1][0]
        if len(entries) < 1000:
            return batches
