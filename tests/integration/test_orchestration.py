"""The four orchestration modes, each on real workers."""

from __future__ import annotations

import pytest

from agentflow import Client
from agentflow.orchestration import Orchestrator

pytestmark = pytest.mark.integration


@pytest.fixture
def flows(start_worker, client: Client) -> Orchestrator:
    start_worker(concurrency=8)
    return Orchestrator(client)


def test_route_sends_one_event_to_its_agent(flows: Orchestrator) -> None:
    result = flows.route({"type": "t", "agent": "upper", "data": {"text": "hi"}}).result(30)
    assert result.output == {"text": "HI"}


def test_collaborate_merges_parallel_agents_and_keeps_going_past_a_failure(
    flows: Orchestrator,
) -> None:
    handle = flows.collaborate(["upper", "exclaim", "boom"],
                               {"type": "t", "data": {"text": "go", "why": "test"}})  # fmt: skip
    result = handle.result(timeout=60)
    assert result["outputs"] == {"upper": {"text": "GO"}, "exclaim": {"text": "go!"}}
    assert "boom: test" in result["errors"]["boom"]


def test_sequential_passes_each_output_on(flows: Orchestrator) -> None:
    handle = flows.sequential(["upper", "exclaim", "exclaim"],
                              {"type": "t", "data": {"text": "step"}})  # fmt: skip
    result = handle.result(timeout=60)
    assert result["output"] == {"text": "STEP!!"}


def test_sequential_stops_at_the_failing_step(flows: Orchestrator) -> None:
    handle = flows.sequential(["upper", "boom", "exclaim"], {"type": "t", "data": {"text": "x"}})
    result = handle.result(timeout=60)
    assert result["agent"] == "boom" and "boom" in result["error"]


def test_loop_runs_until_done(flows: Orchestrator) -> None:
    result = flows.loop("climb", {"type": "t", "data": {"target": 3}}, max_iterations=10).result(60)
    assert result["done"] is True and result["iterations"] == 3
    assert result["output"] == {"n": 3, "done": True}


def test_loop_stops_at_max_iterations(flows: Orchestrator) -> None:
    result = flows.loop("climb", {"type": "t", "data": {"target": 99}}, max_iterations=2).result(60)
    assert result["done"] is False and result["iterations"] == 2
    assert result["output"]["n"] == 2


def test_mixed_runs_agents_in_parallel_then_a_pipeline_over_their_merged_outputs(
    flows: Orchestrator,
) -> None:
    handle = flows.mixed(["upper", "exclaim", "boom"], ["gather", "upper"],
                         {"type": "t", "data": {"text": "go", "why": "x"}})  # fmt: skip
    result = handle.result(timeout=60)
    assert result["agent"] == "upper"
    assert result["output"] == {"text": "GO + GO!"}  # gather's "GO + go!", upper-cased


def test_mixed_stops_when_every_parallel_agent_failed(flows: Orchestrator) -> None:
    handle = flows.mixed(["boom", "boom"], ["gather"], {"type": "t", "data": {"why": "x"}})
    result = handle.result(timeout=60)
    assert "every parallel agent failed" in result["error"]
