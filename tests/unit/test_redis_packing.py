"""Commands of AgentFlow's asyncio Redis client are packed by hiredis: the same bytes as
redis-py's own packer, and the same error for a value Redis cannot take."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from agentflow._redis._packing import HiredisPacking, with_hiredis_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 2, b"k1", "k2", 1.5, 0.1, -3, 1e20, 10**30, "héllo", memoryview(b"mv")),
    ("SCRIPT LOAD", "return 1"),  # a name with a literal argument goes out as two words
    (b"CONFIG GET", "maxmemory"),
    ("SET", "blob", b"\x00\xff" * 40_000),  # over redis-py's buffer cutoff
]


def wire(chunks: list[Any]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


def test_hiredis_packs_the_same_bytes_as_redis_py() -> None:
    python, packed = Connection(), with_hiredis_packing(Connection)()
    assert isinstance(packed, HiredisPacking)
    for command in COMMANDS:
        assert wire(packed.pack_command(*command)) == wire(python.pack_command(*command))
    assert wire(packed.pack_commands(COMMANDS)) == wire(python.pack_commands(COMMANDS))


@pytest.mark.parametrize("value", [True, None, object()])
def test_a_value_redis_cannot_take_is_a_data_error(value: object) -> None:
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_commands([("GET", "k"), ("SET", "k", value)])


def test_tls_and_unix_socket_connections_keep_their_class() -> None:
    for cls in (Connection, SSLConnection, UnixDomainSocketConnection):
        packed = with_hiredis_packing(cls)
        assert issubclass(packed, cls) and issubclass(packed, HiredisPacking)
        assert with_hiredis_packing(packed) is packed
        assert with_hiredis_packing(cls) is packed  # one class per connection class


def test_an_int_subclass_is_packed_by_redis_py() -> None:
    class Count(int):
        pass

    packed = with_hiredis_packing(Connection)()
    assert (
        wire(packed.pack_command("SET", "k", Count(5)))
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    )
    assert wire(packed.pack_commands([("SET", "k", Count(5))])) == wire(
        Connection().pack_commands([("SET", "k", Count(5))])
    )


def test_a_connection_with_another_text_encoding_keeps_redis_pys_packer() -> None:
    assert with_hiredis_packing(Connection, {"encoding": "latin-1"}) is Connection
    assert with_hiredis_packing(Connection, {"encoding_errors": "surrogateescape"}) is Connection
    assert issubclass(with_hiredis_packing(Connection, {"encoding": "UTF-8"}), HiredisPacking)
