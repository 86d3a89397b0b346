"""Session state: a read-only view by default, copy-on-write clones, deltas merged in Redis.

Each session is one Redis hash (``<prefix>:state:<session>``); every field holds one JSON
value (zlib-compressed above `compression_threshold` when compression is on). Updates are
applied as deltas (HSET / HDEL / HINCRBY) in one MULTI block, so concurrent events on one
session never lose each other's keys. A version field bumps on every write, which lets a
bounded local cache (`state_cache_size`) serve reads after a one-field check.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, cast

import redis

from agentflow.models import StateUpdate

_VERSION_FIELD = "__v"
_ZLIB_MARK = b"\x00z"


class State(Mapping[str, Any]):
    """A read-only view of one session's state. Call :meth:`clone` to change it."""

    __slots__ = ("_data", "session_id")

    def __init__(self, data: Mapping[str, Any] | None = None, session_id: str | None = None):
        self._data: Mapping[str, Any] = data if data is not None else {}
        self.session_id = session_id

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"State({dict(self._data)!r}, session_id={self.session_id!r})"

    @property
    def read_only(self) -> bool:
        """A plain State is always read-only; MutableState is not."""
        return True

    def get_string(self, key: str, default: str = "") -> str:
        """The value at `key` as a string (the seed's `GetString`)."""
        value = self._data.get(key, default)
        return value if isinstance(value, str) else str(value)

    def clone(self) -> MutableState:
        """A copy-on-write clone whose changes are recorded as a delta."""
        return MutableState(self._data, self.session_id)

    def clone_if_needed(self) -> State:
        """Return self: a read-only view never needs copying (the seed's `CloneIfNeeded`)."""
        return self


class MutableState(State):
    """A clone of a State that records every change as a :class:`StateUpdate`."""

    __slots__ = ("_base", "_delta", "_own")

    def __init__(self, base: Mapping[str, Any], session_id: str | None = None):
        super().__init__(base, session_id)
        self._base = base
        self._own: dict[str, Any] | None = None  # copied on first write
        self._delta = StateUpdate()

    @property
    def read_only(self) -> bool:
        return False

    def _writable(self) -> dict[str, Any]:
        if self._own is None:
            self._own = dict(self._base)
            self._data = self._own
        return self._own

    def __setitem__(self, key: str, value: Any) -> None:
        self._writable()[key] = value
        self._delta.set[key] = value
        self._delta.incr.pop(key, None)
        if key in self._delta.delete:
            self._delta.delete.remove(key)

    def __delitem__(self, key: str) -> None:
        del self._writable()[key]
        self._delta.set.pop(key, None)
        self._delta.incr.pop(key, None)
        self._delta.delete.append(key)

    def set(self, key: str, value: Any) -> None:
        """Set `key` to `value`."""
        self[key] = value

    def incr(self, key: str, amount: int = 1) -> int:
        """Add to an integer counter; concurrent increments from many events all count."""
        data = self._writable()
        data[key] = int(data.get(key, 0)) + amount
        if key in self._delta.set:
            self._delta.set[key] = data[key]
        else:
            self._delta.incr[key] = self._delta.incr.get(key, 0) + amount
        return int(data[key])

    def delta(self) -> StateUpdate:
        """The changes made since the clone."""
        return self._delta.model_copy(deep=True)


class StateStore:
    """Loads and saves session state in Redis, with a bounded, version-checked local cache."""

    def __init__(
        self,
        client: redis.Redis | None,
        *,
        prefix: str = "agentflow",
        ttl: float = 3600.0,
        cache_size: int = 10000,
        compress: bool = True,
        compression_threshold: int = 512,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = max(1, int(ttl))
        self._cache_size = cache_size
        self._compress = compress
        self._threshold = compression_threshold
        self._cache: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, session_id: str) -> str:
        """The Redis key of a session's hash."""
        return f"{self._prefix}:state:{session_id}"

    def _encode(self, value: Any) -> bytes:
        raw = json.dumps(value, separators=(",", ":")).encode()
        if self._compress and len(raw) > self._threshold:
            return _ZLIB_MARK + zlib.compress(raw)
        return raw

    @staticmethod
    def _decode(raw: bytes) -> Any:
        if raw.startswith(_ZLIB_MARK):
            raw = zlib.decompress(raw[len(_ZLIB_MARK) :])
        return json.loads(raw)

    def load(self, session_id: str) -> State:
        """The session's current state as a read-only view (empty if none)."""
        assert self._redis is not None, "this store has no blocking client: use load_async"
        key = self.key(session_id)
        if self._cache_size:
            hit = self._cached(session_id, self._redis.hget(key, _VERSION_FIELD))
            if hit is not None:
                return hit
        return self._loaded(session_id, cast(Any, self._redis.hgetall(key)))

    async def load_async(self, command: Any, session_id: str) -> State:
        """:meth:`load` on the worker's event loop; `command(*args)` sends one Redis
        command and returns an awaitable of its reply (a batch's ``command``)."""
        key = self.key(session_id)
        if self._cache_size:
            hit = self._cached(session_id, await command("HGET", key, _VERSION_FIELD))
            if hit is not None:
                return hit
        raw = await command("HGETALL", key)
        if isinstance(raw, list):  # a pipeline's reply: field, value, field, value...
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        return self._loaded(session_id, raw)

    def _cached(self, session_id: str, raw_version: Any) -> State | None:
        version = int(raw_version) if raw_version is not None else 0
        with self._lock:
            hit = self._cache.get(session_id)
            if hit is not None and hit[0] == version:
                self._cache.move_to_end(session_id)
                return State(hit[1], session_id)
        return None

    def _loaded(self, session_id: str, raw: dict[bytes, bytes]) -> State:
        version = int(raw.pop(_VERSION_FIELD.encode(), b"0") or 0)
        data = {k.decode(): self._decode(v) for k, v in raw.items()}
        if self._cache_size:
            with self._lock:
                self._cache[session_id] = (version, data)
                self._cache.move_to_end(session_id)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return State(data, session_id)

    def apply(self, session_id: str, update: StateUpdate) -> None:
        """Merge a delta into the session atomically and refresh its TTL."""
        assert self._redis is not None, "this store has no blocking client"
        key = self.key(session_id)
        pipe = self._redis.pipeline(transaction=True)
        if update.set:
            pipe.hset(key, mapping={k: self._encode(v) for k, v in update.set.items()})
        if update.delete:
            pipe.hdel(key, *update.delete)
        for field, amount in update.incr.items():
            pipe.hincrby(key, field, amount)
        pipe.hincrby(key, _VERSION_FIELD, 1)
        pipe.expire(key, self._ttl)
        pipe.execute()

    def delta_args(self, update: StateUpdate) -> list[Any]:
        """The delta flattened for a Lua script: nset, k, v, …, ndel, k, …, nincr, k, n, …."""
        args: list[Any] = [len(update.set)]
        for k, v in update.set.items():
            args += [k, self._encode(v)]
        args.append(len(update.delete))
        args += update.delete
        args.append(len(update.incr))
        for k, n in update.incr.items():
            args += [k, int(n)]
        return args

    @property
    def ttl(self) -> int:
        """Seconds a session lives after its last write."""
        return self._ttl

    def delete(self, session_id: str) -> None:
        """Forget a session."""
        assert self._redis is not None, "this store has no blocking client"
        self._redis.delete(self.key(session_id))
        with self._lock:
            self._cache.pop(session_id, None)
