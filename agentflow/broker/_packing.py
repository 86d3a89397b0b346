"""redis.asyncio connections whose commands hiredis packs (in C), as redis-py's blocking
connections already do.

redis-py's asyncio connection builds the wire form of every command in Python
(``pack_command``: an encode call, a length and two joins per argument). On a worker's event
loop that runs the begin/finish scripts of two thousand events a second, that was 7 % of the
loop thread. hiredis's ``pack_command`` gives the same bytes; a type it cannot send raises
redis-py's ``DataError`` as before.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from redis.exceptions import DataError

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    hiredis = None  # type: ignore[assignment]


def _split(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # A command name with literal arguments ('SCRIPT LOAD') goes out as separate words.
    head = args[0]
    if isinstance(head, str):
        return (*head.encode().split(), *args[1:])
    if b" " in head:
        return (*head.split(), *args[1:])
    return args


class HiredisPacking:
    """Mixin for a ``redis.asyncio`` connection class: commands packed by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in the Redis protocol."""
        try:
            return [hiredis.pack_command(_split(args))]
        except TypeError as exc:
            raise DataError(exc).with_traceback(sys.exc_info()[2]) from None

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        """A pipeline's commands in the Redis protocol, as one buffer."""
        try:
            return [b"".join([hiredis.pack_command(_split(tuple(c))) for c in commands])]
        except TypeError as exc:
            raise DataError(exc).with_traceback(sys.exc_info()[2]) from None


_classes: dict[type, type] = {}


def with_hiredis_packing(connection_class: type) -> type:
    """`connection_class` (TCP, TLS or Unix socket) with :class:`HiredisPacking` mixed in;
    unchanged where hiredis is not installed."""
    if hiredis is None or issubclass(connection_class, HiredisPacking):
        return connection_class
    packed = _classes.get(connection_class)
    if packed is None:
        name = f"HiredisPacking{connection_class.__name__}"
        packed = _classes[connection_class] = type(name, (HiredisPacking, connection_class), {})
    return packed
