"""statsd metrics from Celery signals: events received, succeeded, failed; latency; queue wait.

Names (prefix ``agentflow.`` from `[monitoring] statsd_prefix`):

- ``events.received.<agent>``, ``events.succeeded.<agent>``, ``events.failed.<agent>``,
  ``events.retried.<agent>`` — counters
- ``event.latency.<agent>`` — enqueue (producer stamp) to done, ms
- ``event.queue_wait.<agent>`` — enqueue to start, ms
- ``event.run_time.<agent>`` — start to done in the worker, ms
- ``queue.depth.<agent>`` and ``events.in_flight`` — gauges, every `metrics_interval`

LLM calls add ``llm.call.<provider>`` (ms), ``llm.errors.<provider>``, ``llm.cache.hit`` /
``llm.cache.miss`` and ``llm.tokens.{prompt,completion}.<model>``; the shared breaker
``llm.breaker.open.<provider>`` (gauge 0/1), ``llm.breaker.opened.<provider>`` and
``llm.breaker.rejected.<provider>``; tools ``tool.call.<tool>`` (ms) and
``tool.errors.<tool>``. Events that run directly on the worker's loop (see
agentflow.workers.direct) send the same event metrics from there, plus
``events.fanned_out.<agent>``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import signals

from agentflow.metrics import get_metrics

_started: dict[str, float] = {}
_ENQUEUED = "agentflow_enqueued_at"


def _agent_of(args: Any, request: Any = None) -> str:
    event = args[0] if args else None
    if isinstance(event, dict) and event.get("agent"):
        return str(event["agent"]).replace(".", "_")
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or ""
    return queue.rsplit(".", 1)[-1] or "unknown"


def _is_event(sender: Any) -> bool:
    return getattr(sender, "name", None) == "agentflow.run_event"


@signals.task_prerun.connect
def on_prerun(sender: Any = None, task_id: str = "", args: Any = None, **_: Any) -> None:
    """Count the event and its queue wait."""
    if not _is_event(sender):
        return
    now = time.time()
    _started[task_id] = now
    agent = _agent_of(args, sender.request)
    m = get_metrics()
    m.incr(f"events.received.{agent}")
    enqueued = (sender.request.headers or {}).get(_ENQUEUED) if sender.request.headers else None
    if enqueued is None:
        enqueued = getattr(sender.request, _ENQUEUED, None)
    if isinstance(enqueued, int | float):
        m.timing(f"event.queue_wait.{agent}", max(0.0, now - enqueued) * 1000)


@signals.task_postrun.connect
def on_postrun(
    sender: Any = None, task_id: str = "", args: Any = None, state: str | None = None, **_: Any
) -> None:
    """Count success or failure; time the run and the whole trip."""
    if not _is_event(sender):
        return
    now = time.time()
    agent = _agent_of(args, sender.request)
    m = get_metrics()
    started = _started.pop(task_id, None)
    if started is not None:
        m.timing(f"event.run_time.{agent}", (now - started) * 1000)
    if state == "SUCCESS":
        m.incr(f"events.succeeded.{agent}")
        headers = sender.request.headers or {}
        enqueued = headers.get(_ENQUEUED) or getattr(sender.request, _ENQUEUED, None)
        if isinstance(enqueued, int | float):
            m.timing(f"event.latency.{agent}", max(0.0, now - enqueued) * 1000)
    elif state == "RETRY":
        m.incr(f"events.retried.{agent}")
    else:
        m.incr(f"events.failed.{agent}")


@signals.worker_ready.connect
def start_gauges(sender: Any = None, **_: Any) -> None:
    """Report queue depths and events in flight every `metrics_interval` (main process)."""
    from agentflow.config import get_settings

    settings = get_settings()
    if not settings.monitoring.enable_metrics:
        return
    threading.Thread(target=_gauge_loop, name="agentflow-gauges", daemon=True).start()


def _gauge_loop() -> None:
    from agentflow.agents.registry import agent_names
    from agentflow.broker.connection import get_redis
    from agentflow.broker.queues import agent_queue
    from agentflow.config import get_settings

    settings = get_settings()
    interval = settings.monitoring.metrics_interval
    prefix = settings.broker.key_prefix
    while True:
        try:
            names = agent_names()
            pipe = get_redis().pipeline(transaction=False)
            for name in names:
                pipe.llen(agent_queue(name))
            pipe.zcard(f"{prefix}:inflight")
            *depths, inflight = pipe.execute()
            m = get_metrics()
            for name, depth in zip(names, depths, strict=True):
                m.gauge(f"queue.depth.{name.replace('.', '_')}", int(depth))
            m.gauge("events.in_flight", int(inflight))
        except Exception:
            pass
        time.sleep(interval)
