"""OpenTelemetry for test workers: load with ``[agents] modules`` (next to "tests.agents").

As OpenTelemetry's Celery instrumentation documents, a worker sets up its tracer provider
and ``CeleryInstrumentor().instrument()`` when its process starts: in ``worker_init`` (the
process that runs tasks with AgentFlow's pool, threads or solo) or ``worker_process_init``
(each prefork child). Finished spans are written as JSON lines to the file named by
``$AGENTFLOW_TEST_OTEL_SPANS``; without it this module does nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from celery import signals

SPANS_ENV = "AGENTFLOW_TEST_OTEL_SPANS"
_lock = threading.Lock()
_done = False


def span_record(span: Any) -> dict[str, Any]:
    """What the tests look at in a finished span (ids as hex, as OTLP shows them)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "kind": span.kind.name,
        "attributes": {
            k: v if isinstance(v, str | int | float | bool) else list(v)
            for k, v in (span.attributes or {}).items()
        },
        "pid": os.getpid(),
    }


def setup_tracing(path: str) -> None:
    """A tracer provider that writes every finished span to `path`; instrument Celery."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class JsonLinesExporter(SpanExporter):
        """One JSON object per finished span, appended to `path`."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(json.dumps(span_record(s)) + "\n" for s in spans)
            with _lock, open(path, "a", encoding="utf-8") as f:
                f.write(lines)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()


@signals.worker_init.connect(weak=False)
@signals.worker_process_init.connect(weak=False)
def _init_tracing(**_: Any) -> None:
    global _done
    path = os.environ.get(SPANS_ENV)
    if not path or _done:
        return
    _done = True
    setup_tracing(path)
