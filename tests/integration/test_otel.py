"""OpenTelemetry: one trace from the producer's publish to the worker's run.

The producer (this process) and the worker each run OpenTelemetry's Celery instrumentation,
set up as its documentation says (the worker in ``worker_init``: tests/otel_setup.py). An
event's trace goes from ``apply_async/agentflow.run_event`` (the producer's publish) to
``run/agentflow.run_event`` (the worker's run); a fan-out's tool calls
(``run/agentflow.run_tool``) and its continuation (``run/agentflow.resume_event``) are in
the event's trace, below its run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.instrumentation.celery")

from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from tests.otel_setup import SPANS_ENV, span_record

pytestmark = pytest.mark.integration

MESSAGE_ID = "messaging.message.id"
Span = dict[str, Any]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """This process instrumented as a producer (see `producer_spans` for its spans)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.exporter = exporter  # type: ignore[attr-defined]
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        yield tracer_provider
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()


@pytest.fixture
def producer_spans(provider: TracerProvider) -> InMemorySpanExporter:
    """The producer's finished spans."""
    exporter: InMemorySpanExporter = provider.exporter  # type: ignore[attr-defined]
    return exporter


def _start_traced_worker(start_worker: Any, spans_file: Path, pool: str | None = None,
                         env: dict[str, str] | None = None) -> None:  # fmt: skip
    start_worker(pool=pool, env={
        "AGENTFLOW_AGENTS__MODULES": '["tests.agents", "tests.otel_setup"]',
        SPANS_ENV: str(spans_file), **(env or {})})  # fmt: skip


def _wait_spans(path: Path, complete: Callable[[list[Span]], bool]) -> list[Span]:
    """The worker's spans, once `complete` says they are all there (60 s at most)."""
    deadline = time.monotonic() + 60
    spans = _worker_spans(path)
    while not complete(spans) and time.monotonic() < deadline:
        time.sleep(0.2)
        spans = _worker_spans(path)
    assert complete(spans), spans
    return spans


def _worker_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _one(spans: list[Span], name: str, task_id: str) -> Span:
    found = [s for s in spans if s["name"] == name and s["attributes"].get(MESSAGE_ID) == task_id]
    assert len(found) == 1, (name, task_id, found)
    return found[0]


def _ancestors(span: Span, spans: list[Span]) -> list[str]:
    """Names of `span`'s ancestors, nearest first (as far as the recorded spans go)."""
    by_id = {s["span_id"]: s for s in spans}
    chain, parent = [], span["parent_id"]
    while parent is not None and parent in by_id:
        chain.append(by_id[parent]["span_id"])
        parent = by_id[parent]["parent_id"]
    return chain


@pytest.mark.parametrize(
    ("pool", "env"),
    [
        pytest.param(None, {}, id="asyncio-pool"),
        # [monitoring] task_events = true: the fan-out also sends task-sent events.
        pytest.param(None, {"AGENTFLOW_MONITORING__TASK_EVENTS": "true"}, id="task-events"),
        pytest.param("prefork", {}, id="prefork"),
    ],
)
def test_trace_goes_from_publish_to_run_and_through_the_fanout(
    start_worker: Any, client: Any, producer_spans: InMemorySpanExporter, tmp_path: Path,
    pool: str | None, env: dict[str, str],
) -> None:  # fmt: skip
    spans_file = tmp_path / "worker-spans.jsonl"
    _start_traced_worker(start_worker, spans_file, pool, env)
    echo = client.emit({"type": "otel", "agent": "echo", "data": {"x": 1}})
    fan = client.emit({"type": "otel", "agent": "fanout", "data": {"calls": 2, "seconds": 0}})
    assert echo.result(timeout=60).output["echo"] == {"x": 1}
    assert fan.result(timeout=60).output == {"indices": [0, 1], "errors": []}

    def complete(spans: list[Span]) -> bool:
        names = [s["name"] for s in spans]
        return (names.count("run/agentflow.run_event") >= 2
                and names.count("run/agentflow.run_tool") >= 2
                and "run/agentflow.resume_event" in names)  # fmt: skip

    worker = _wait_spans(spans_file, complete)
    produced = [span_record(s) for s in producer_spans.get_finished_spans()]

    # The producer's publish and the worker's run: one trace, the run a child of the publish.
    for handle in (echo, fan):
        publish = _one(produced, "apply_async/agentflow.run_event", handle.id)
        assert publish["kind"] == "PRODUCER"
        run = _one(worker, "run/agentflow.run_event", handle.id)
        assert run["kind"] == "CONSUMER"
        assert run["trace_id"] == publish["trace_id"]
        assert run["parent_id"] == publish["span_id"]

    # The fan-out's tool calls and its continuation run in the event's trace, below its run.
    fan_run = _one(worker, "run/agentflow.run_event", fan.id)
    tools = [s for s in worker if s["name"] == "run/agentflow.run_tool"]
    assert len(tools) == 2, tools
    for tool in tools:
        assert tool["trace_id"] == fan_run["trace_id"], tool
        assert fan_run["span_id"] in _ancestors(tool, worker), tool
        published = [s for s in worker if s["span_id"] == tool["parent_id"]]
        assert [s["name"] for s in published] == ["apply_async/agentflow.run_tool"]
    resume = _one(worker, "run/agentflow.resume_event", fan.id)
    assert resume["trace_id"] == fan_run["trace_id"], resume
    assert fan_run["span_id"] in _ancestors(resume, worker), resume
    # The echo event's trace is its own.
    echo_run = _one(worker, "run/agentflow.run_event", echo.id)
    assert echo_run["trace_id"] != fan_run["trace_id"]


def test_a_batch_of_events_gets_one_publish_span_each_under_the_callers_span(
    start_worker: Any, client: Any, provider: TracerProvider, tmp_path: Path
) -> None:
    """`emit_many` inside the caller's span: each event's publish is a child of that span
    (not of the previous event's publish), each run a child of its own publish, and the
    caller's span is still the current one afterwards."""
    spans_file = tmp_path / "worker-spans.jsonl"
    _start_traced_worker(start_worker, spans_file)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("handle-request") as request:
        handles = client.emit_many([{"type": "otel", "agent": "echo", "data": {"i": i}}
                                    for i in range(3)])  # fmt: skip
        assert trace.get_current_span() is request
    for handle in handles:
        handle.result(timeout=60)
    worker = _wait_spans(spans_file, lambda spans: len(spans) >= 3)
    produced = [span_record(s) for s in provider.exporter.get_finished_spans()]  # type: ignore[attr-defined]
    parent = span_record(request)
    for handle in handles:
        publish = _one(produced, "apply_async/agentflow.run_event", handle.id)
        assert publish["parent_id"] == parent["span_id"]
        assert publish["trace_id"] == parent["trace_id"]
        run = _one(worker, "run/agentflow.run_event", handle.id)
        assert run["parent_id"] == publish["span_id"]
