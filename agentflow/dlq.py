"""The dead-letter queue: events that cannot run, kept in Redis with their reason.

Entries live in a hash (``<prefix>:dlq:entries``, id → JSON) and a list of ids in arrival
order (``<prefix>:dlq``). Nothing is dropped: `replay` re-emits an entry's event and removes
the entry only once the event is back on its queue.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast


@dataclass
class DeadLetter:
    """One dead-lettered event (or raw message) and why it could not run."""

    id: str
    reason: str
    queue: str | None = None
    task_id: str | None = None
    event: dict[str, Any] | None = None
    raw: str | None = None
    content_type: str | None = None
    failed_at: float = field(default_factory=time.time)
    source: str = "worker"
    attempts: int = 1

    def to_json(self) -> str:
        """Serialise for Redis."""
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        """Parse what :meth:`to_json` wrote."""
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        return cls(**json.loads(text))


def raw_to_text(body: Any) -> str:
    """A JSON-safe rendering of a message body we could not decode."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(data).decode()
    if isinstance(body, str):
        return body
    try:
        return json.dumps(body, default=repr)
    except (TypeError, ValueError):
        return repr(body)


_MAX_STEPS_COUNTED = 64


class DeadLetterQueue:
    """Push, list, inspect, remove and replay dead-lettered events."""

    def __init__(self, client: Any, prefix: str = "agentflow") -> None:
        self._redis = client
        self.prefix = prefix
        self.list_key = f"{prefix}:dlq"
        self.entries_key = f"{prefix}:dlq:entries"

    def _entry(self, reason: str, event: Mapping[str, Any] | None, raw: Any, queue: str | None,
               task_id: str | None, content_type: str | None, source: str) -> DeadLetter:  # fmt: skip
        return DeadLetter(
            id=uuid.uuid4().hex,
            reason=reason,
            queue=queue,
            task_id=task_id,
            event=dict(event) if event is not None else None,
            raw=None if raw is None else raw_to_text(raw),
            content_type=content_type,
            source=source,
        )

    def _write(self, pipe: Any, entry: DeadLetter) -> None:
        pipe.hset(self.entries_key, entry.id, entry.to_json())
        pipe.rpush(self.list_key, entry.id)

    def push(
        self,
        reason: str,
        *,
        event: Mapping[str, Any] | None = None,
        raw: Any = None,
        queue: str | None = None,
        task_id: str | None = None,
        content_type: str | None = None,
        source: str = "worker",
    ) -> DeadLetter:
        """Store an entry; returns it (with its id)."""
        entry = self._entry(reason, event, raw, queue, task_id, content_type, source)
        pipe = self._redis.pipeline(transaction=True)
        self._write(pipe, entry)
        pipe.execute()
        return entry

    async def push_async(
        self,
        reason: str,
        *,
        event: Mapping[str, Any] | None = None,
        raw: Any = None,
        queue: str | None = None,
        task_id: str | None = None,
        content_type: str | None = None,
        source: str = "worker",
    ) -> DeadLetter:
        """:meth:`push` for a queue built on a ``redis.asyncio`` client."""
        entry = self._entry(reason, event, raw, queue, task_id, content_type, source)
        pipe = self._redis.pipeline(transaction=True)
        self._write(pipe, entry)
        await pipe.execute()
        return entry

    def __len__(self) -> int:
        return int(cast(Any, self._redis.llen(self.list_key)))

    def list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Entries, oldest first."""
        ids: list[bytes] = cast(Any, self._redis.lrange(self.list_key, offset, offset + limit - 1))
        if not ids:
            return []
        raws: list[bytes | None] = cast(Any, self._redis.hmget(self.entries_key, ids))
        return [DeadLetter.from_json(r) for r in raws if r is not None]

    def get(self, entry_id: str) -> DeadLetter | None:
        """One entry by id."""
        raw: Any = self._redis.hget(self.entries_key, entry_id)
        return DeadLetter.from_json(raw) if raw is not None else None

    def remove(self, entry_id: str) -> bool:
        """Delete one entry; False when it was not there."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self.entries_key, entry_id)
        pipe.lrem(self.list_key, 0, entry_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def purge(self) -> int:
        """Delete every entry; returns how many there were."""
        count = len(self)
        self._redis.delete(self.list_key, self.entries_key)
        return count

    def replay(self, entry_id: str, emit: Callable[[dict[str, Any]], Any]) -> Any:
        """Re-emit an entry's event through `emit` and remove the entry once that succeeded.

        The event's delivery counter is reset, so an event dead-lettered after too many
        redeliveries gets a fresh budget. Raw messages that never parsed as an event cannot
        be replayed: :class:`~agentflow.errors.EventRejected` says so and the entry stays.
        """
        from agentflow.errors import EventRejected

        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        if entry.event is None:
            raise EventRejected(
                f"entry {entry_id} holds a raw message, not an event; fix and emit it by hand: "
                f"{entry.reason}"
            )
        if entry.task_id:  # the delivery counters of every step
            self._redis.delete(*(f"{self.prefix}:deliv:{entry.task_id}:{step}"
                                 for step in range(_MAX_STEPS_COUNTED)))  # fmt: skip
        handle = emit(dict(entry.event))
        self.remove(entry_id)
        return handle
