"""redis.asyncio connections whose commands hiredis packs (in C), as redis-py's blocking
connections already do.

redis-py's asyncio connection builds the wire form of every command in Python
(``pack_command``: an encode call, a length and two joins per argument). On a worker's event
loop that runs the begin/finish scripts of two thousand events a second, that was 7 % of the
loop thread. redis-py's own hiredis packer (``HiredisRespSerializer``) gives the same bytes
for UTF-8 text; an argument it does not take (an int subclass, a value Redis cannot store)
goes to redis-py's Python packer, which packs it or raises its ``DataError`` as before.
Used for AgentFlow's own asyncio client only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from redis.connection import HiredisRespSerializer
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE

_HIREDIS = HiredisRespSerializer()
"""redis-py's own hiredis packer (what its blocking connections use)."""


class HiredisPacking:
    """Mixin for a ``redis.asyncio`` connection class: commands packed by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in the Redis protocol."""
        try:
            return cast(list[bytes], _HIREDIS.pack(*args))
        except DataError:  # e.g. an int subclass: redis-py's packer, and its DataError
            return cast(list[bytes], super().pack_command(*args))  # type: ignore[misc]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        """A pipeline's commands in the Redis protocol, as one buffer."""
        listed = [tuple(c) for c in commands]
        try:
            return [b"".join([_HIREDIS.pack(*c)[0] for c in listed])]
        except DataError:
            return cast(list[bytes], super().pack_commands(listed))  # type: ignore[misc]


_classes: dict[type, type] = {}


def with_hiredis_packing(connection_class: type, kwargs: dict[str, Any] | None = None) -> type:
    """`connection_class` (TCP, TLS or Unix socket) with :class:`HiredisPacking` mixed in;
    unchanged where hiredis is not installed, or where the connection's `kwargs` ask for
    an encoding other than strict UTF-8 (hiredis encodes text only that way)."""
    kwargs = kwargs or {}
    plain = (kwargs.get("encoding", "utf-8").lower().replace("_", "-") in ("utf-8", "utf8")
             and kwargs.get("encoding_errors", "strict") == "strict")  # fmt: skip
    if not HIREDIS_AVAILABLE or not plain or issubclass(connection_class, HiredisPacking):
        return connection_class
    packed = _classes.get(connection_class)
    if packed is None:
        name = f"HiredisPacking{connection_class.__name__}"
        packed = _classes[connection_class] = type(name, (HiredisPacking, connection_class), {})
    return packed
