"""Events, results and session state as a user handles them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentflow import AgentResult, Event, State, StateUpdate


def test_event_defaults_and_wire_format() -> None:
    event = Event(type="greet", agent="echo", data={"x": 1})
    assert len(event.id) == 32 and event.created_at.tzinfo is not None
    wire = event.model_dump(mode="json")
    assert Event.model_validate(wire) == event
    assert event.dedup_key == event.id
    assert Event(type="t", idempotency_key="k").dedup_key == "k"


@pytest.mark.parametrize(
    "bad",
    [{}, {"type": ""}, {"type": "t", "data": [1]}, {"type": "t", "extra": 1},
     {"type": "t", "agent": "has space"}],
)  # fmt: skip
def test_invalid_events_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Event.model_validate(bad)


def test_state_is_read_only_and_clone_is_copy_on_write() -> None:
    base = {"a": 1, "n": 2}
    state = State(base, "s1")
    assert state.read_only and state["a"] == 1 and state.get_string("a") == "1"
    with pytest.raises(TypeError):
        state["a"] = 2  # type: ignore[index]
    clone = state.clone()
    clone["b"] = "x"
    clone.incr("n", 3)
    del clone["a"]
    assert base == {"a": 1, "n": 2}  # the original is untouched
    assert dict(clone) == {"n": 5, "b": "x"}
    delta = clone.delta()
    assert delta.set == {"b": "x"} and delta.incr == {"n": 3} and delta.delete == ["a"]


def test_state_update_and_result_round_trip() -> None:
    result = AgentResult(output={"k": 1}, state_updates=StateUpdate(incr={"c": 1}))
    again = AgentResult.model_validate_json(result.model_dump_json())
    assert again == result and again.ok
    assert StateUpdate().is_empty() and not result.state_updates.is_empty()
