"""Durations as the seed's guide writes them: "30s", "100ms", "1h", "1m30s", or plain seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Return `value` in seconds; accept numbers (seconds) and strings like "1m30s" or "250ms"."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. '100ms', '30s', '5m', '1h')")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds back in the shortest unit that is exact ("30s", "100ms", "1h")."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit in ("h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A float number of seconds that reads "30s"-style strings and writes them back."""
