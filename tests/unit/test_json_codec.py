"""The per-message JSON codec reads what ``json.loads`` reads and writes what it reads back."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow import _json

# Values as JSON carries them, with what pydantic-core's reader handles apart from the
# stdlib's: integers past 64 bits, NaN and infinities, any Unicode (surrogates included).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and 1 not equal to 1.0 (types must match too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(values, st.booleans())
def test_loads_reads_any_json_text_as_the_stdlib_does(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert same(_json.loads(text), json.loads(text))
    assert same(_json.loads(text.encode()), json.loads(text))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='[]{}",:0123456789.eE+-truefalsnNIiy \\u\x00\t\n'))
def test_loads_refuses_what_the_stdlib_refuses(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            _json.loads(text)
    else:
        assert same(_json.loads(text), expected)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',  # the last of duplicate keys
        "123456789012345678901234567890",  # past 64 bits: an int, not a float
        '"\\ud800"',  # a lone surrogate escape (pydantic-core refuses it)
        '"\udc80"',  # a str holding a lone surrogate (pydantic-core raises TypeError)
        "[" * 250 + "]" * 250,  # deeper than pydantic-core reads (200)
        "[NaN, Infinity, -Infinity]",
    ],
)
def test_loads_edge_cases_match_the_stdlib(text: str) -> None:
    assert same(_json.loads(text), json.loads(text))


def test_loads_raises_as_the_stdlib_does_on_what_neither_reads() -> None:
    with pytest.raises(ValueError):
        _json.loads("9" * 5000)  # past Python's 4,300 digits
    with pytest.raises(ValueError):
        _json.loads(b"\xff[1]")
    with pytest.raises(RecursionError):
        _json.loads("[" * 100_000 + "]" * 100_000)


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_writes_compact_json_that_reads_back_the_same(value: Any) -> None:
    text = _json.dumps(value)
    assert same(json.loads(text), json.loads(json.dumps(value)))


def test_dumps_writes_other_types_as_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    assert json.loads(_json.dumps({"x": Opaque(), "b": b"\xff\xfe"})) == {
        "x": "opaque",
        "b": "b'\\xff\\xfe'",
    }
