"""JSON on the per-message paths, read and written by pydantic-core (in Rust), with the
standard library's answer wherever the two could differ.

Every event is JSON several times over: the producer writes kombu's envelope around its
message and reads its result entry; the worker reads the envelope and the body back. The
standard library's C codec took 17 % of an ``AsyncClient`` producer's time per W0 event
(py-spy ``--gil``). pydantic-core, which pydantic already installs, reads a 580-byte result
entry in 2.4 µs against 6.4 µs, and writes kombu's envelope in 2.7 µs against 6.2 µs
(docs/internals.md). Its reader gives what ``json.loads`` gives: integers of any size up to
Python's 4,300 digits (its fixed default: a lower ``sys.set_int_max_str_digits`` is not
followed), ``NaN`` and ``Infinity``, the last of duplicate keys. What it refuses (a lone
surrogate, escaped or in a ``str``, nesting deeper than it reads) goes to ``json.loads``,
which reads it or raises its own error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json, to_json

_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)


def loads(data: bytes | str) -> Any:
    """What ``json.loads(data)`` returns, or raises (``ValueError``, ``RecursionError``)."""
    try:
        return from_json(data)
    except (ValueError, TypeError):  # TypeError: a str holding a lone surrogate
        return json.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON text of `value`, non-ASCII characters as they are. A type JSON lacks is
    written as pydantic writes it (a datetime in ISO 8601, an enum as its value, a set as an
    array, a dataclass as an object, UTF-8 bytes as text), any other as its ``str()``."""
    try:
        return to_json(value, fallback=str).decode()
    except (ValueError, TypeError):  # e.g. bytes that are not UTF-8: the stdlib's repr
        return _COMPACT.encode(value)
