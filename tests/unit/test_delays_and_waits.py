"""The pure parts of delayed events and waits: due times, WaitFor, scheduled entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from agentflow import Signal, WaitFor
from agentflow._redis.schedule import due_time, entry, schedule_args


def test_due_time_from_a_delay_or_a_time() -> None:
    assert due_time() is None
    assert due_time(delay=90, now=1000.0) == 1090.0
    assert due_time(delay="1d", now=0.0) == 86400.0
    assert due_time(delay="1h30m", now=0.0) == 5400.0
    assert due_time(delay=timedelta(minutes=2), now=0.0) == 120.0
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert due_time(at=when) == when.timestamp()
    assert due_time(at=1_900_000_000) == 1_900_000_000.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": 1, "at": 2},
        {"delay": -1},
        {"delay": "soon"},
        {"delay": timedelta(seconds=-5)},
        {"at": datetime(2030, 1, 1)},  # naive: which zone?
        {"at": float("nan")},
        {"at": True},
        {"at": "2030-01-01"},
    ],
)
def test_due_time_refuses_what_is_not_a_time(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        due_time(**kwargs)  # type: ignore[arg-type]


def test_entries_are_json_with_an_optional_guard() -> None:
    assert json.loads(entry("q", "item", "e1")) == {"q": "q", "m": "item", "i": "e1"}
    guarded = json.loads(entry("q", "item", guard="p:wait:e1", token="t1"))
    assert guarded == {"q": "q", "m": "item", "g": "p:wait:e1", "t": "t1"}
    assert schedule_args([("e1", 5.0, "x")]) == [1, "e1", "5.0", "x"]


def test_wait_for_takes_the_signal_first_and_durations() -> None:
    wait = WaitFor("approval", timeout="4h", context={"plan": 1})
    assert (wait.signal, wait.timeout, wait.context) == ("approval", 14400.0, {"plan": 1})
    assert WaitFor("x").timeout is None
    assert WaitFor("x", timeout=2.5).timeout == 2.5
    for bad in ({"timeout": 0}, {"timeout": -1}, {"timeout": "later"},
                {"context": {"n": float("inf")}}):  # fmt: skip
        with pytest.raises(ValidationError):
            WaitFor("x", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        WaitFor("")


def test_a_signal_says_what_resumed() -> None:
    assert Signal(name="approval").timed_out is False
    assert Signal(name="a", timed_out=True).payload is None
