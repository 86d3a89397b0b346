"""Orchestration modes of the Go framework, on Celery canvas.

- **route** — one event to one agent (what :meth:`Client.emit` does).
- **collaborate** — several agents get the same event in parallel (a chord); their outputs
  are merged into one result ``{"outputs": {agent: output}, "errors": {agent: reason}}``.
- **sequential** — a pipeline (a chain): each agent's output becomes the next agent's
  ``data.input``, together with the session state; an error stops the pipeline and the
  result says which step failed.
- **mixed** — collaborate, then sequential: several agents in parallel on the event, then
  a pipeline whose first agent gets the merged result ``{"outputs": ..., "errors": ...}``
  as ``data.input`` (the Go framework's ``mixed`` mode); it stops when every parallel
  agent failed.
- **loop** — one agent again and again, its output fed back as ``data.input``, until the
  output's `until` key is true or `max_iterations` ran; each iteration replaces the previous
  task (``Task.replace``), so no worker waits.

Every step is a real event (its own id, claim, result and state delta) run by
``agentflow.flow_step`` on the step agent's queue; a step never raises, so a chord or chain
always completes. A step whose agent fans out tools is replaced by the chord, and the chain
goes on after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

from celery import Task, chain, chord, group
from celery.result import AsyncResult

from agentflow._redis.queues import agent_queue
from agentflow.celery_app import app
from agentflow.client import Client
from agentflow.errors import AgentFlowError, EventFailed, EventTimeout
from agentflow.models import Event

STEP_TASK = "agentflow.flow_step"
MERGE_TASK = "agentflow.flow_merge"
LOOP_TASK = "agentflow.flow_loop"


def _step_event(template: Mapping[str, Any], agent: str, previous: Any) -> dict[str, Any]:
    """A fresh event for `agent` from `template`, carrying the previous step's output."""
    event = {k: v for k, v in dict(template).items() if k not in ("id", "idempotency_key")}
    event["id"] = uuid.uuid4().hex
    event["agent"] = agent
    data = dict(event.get("data") or {})
    if isinstance(previous, dict) and "output" in previous:
        data["input"] = previous["output"]
    elif isinstance(previous, dict) and previous.get("mode") == "collaborate":
        data["input"] = {"outputs": previous["outputs"], "errors": previous["errors"]}
    event["data"] = data
    return event


def _run_step(task: Task, event: dict[str, Any]) -> dict[str, Any]:
    """Run one step's event in this task; an error becomes ``{"error": ..., "agent": ...}``."""
    from agentflow import _aio
    from agentflow._worker.runner import (
        FannedOut,
        Job,
        RetryLater,
        Revoked,
        Suspended,
        get_runner,
    )

    request = task.request
    job = Job(event["id"], "agentflow.run_event", [event], {}, {}, dict(request.__dict__),
              agent_queue(event["agent"]), send_fan_out=False)  # fmt: skip
    try:
        outcome = _aio.run(get_runner().run_event(job))
    except RetryLater as later:
        raise task.retry(countdown=later.countdown, exc=later) from None
    except AgentFlowError as exc:
        return {"error": str(exc), "agent": event.get("agent"), "event_id": event["id"]}
    if isinstance(outcome, FannedOut):
        raise task.replace(outcome.signature)
    if isinstance(outcome, Revoked):
        return {"error": "cancelled", "agent": event.get("agent"), "event_id": event["id"]}
    if isinstance(outcome, Suspended):  # WaitFor: a flow step cannot wait (its chain goes on)
        return {"error": "a flow step cannot wait for a signal (WaitFor)",
                "agent": event.get("agent"), "event_id": event["id"]}  # fmt: skip
    return cast(dict[str, Any], outcome.result)


@app.task(name=STEP_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, typing=False)
def flow_step(self: Task, previous: Any, template: dict[str, Any], agent: str) -> Any:
    """One step of a flow: run `agent` on `template` (with `previous`'s output as input)."""
    if isinstance(previous, dict) and previous.get("error"):
        return previous  # an earlier step failed: the pipeline stops here
    if isinstance(previous, dict) and previous.get("mode") == "collaborate" \
            and not previous.get("outputs"):  # fmt: skip
        return {"error": f"every parallel agent failed: {previous.get('errors')}",
                "agent": agent, "event_id": None}  # fmt: skip
    return _run_step(self, _step_event(template, agent, previous))


@app.task(name=MERGE_TASK, typing=False)
def flow_merge(results: list[Any], agents: list[str]) -> dict[str, Any]:
    """Collaborate's chord body: every agent's output (or error) under its name."""
    outputs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, result in zip(agents, results, strict=True):
        if isinstance(result, dict) and result.get("error") and "output" not in result:
            errors[name] = str(result["error"])
        else:
            outputs[name] = result.get("output") if isinstance(result, dict) else result
    return {"mode": "collaborate", "outputs": outputs, "errors": errors}


@app.task(name=LOOP_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, typing=False)
def flow_loop(
    self: Task, previous: Any, template: dict[str, Any], agent: str, until: str,
    iteration: int, max_iterations: int,
) -> Any:  # fmt: skip
    """One iteration; replaced by the next one until `until` is true or the budget is spent."""
    result = _run_step(self, _step_event(template, agent, previous))
    if result.get("error"):
        return {"mode": "loop", "iterations": iteration, "done": False, **result}
    output = result.get("output")
    done = bool(output.get(until)) if isinstance(output, dict) else False
    if done or iteration >= max_iterations:
        return {"mode": "loop", "iterations": iteration, "done": done, "output": output,
                "last": result}  # fmt: skip
    nxt = flow_loop.si(result, template, agent, until, iteration + 1, max_iterations)
    raise self.replace(nxt.set(queue=agent_queue(agent)))


class FlowHandle:
    """The producer's handle on a flow: its id and its final result."""

    def __init__(self, async_result: AsyncResult) -> None:
        self.async_result = async_result

    @property
    def id(self) -> str:
        """The id of the flow's final task."""
        return str(self.async_result.id)

    def result(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Wait for the flow's result; raises EventTimeout, or EventFailed if it failed."""
        try:
            value = self.async_result.get(timeout=timeout, propagate=False,
                                          disable_sync_subtasks=False)  # fmt: skip
        except Exception as exc:  # celery.exceptions.TimeoutError
            raise EventTimeout(f"flow {self.id} gave no result in {timeout}s") from exc
        if self.async_result.failed():
            raise EventFailed(self.id, str(value))
        return dict(value)


class Orchestrator:
    """Start flows of events across agents (see the module docstring for the modes)."""

    def __init__(self, client: Client | None = None) -> None:
        self.client = client or Client()

    def _template(self, event: Event | Mapping[str, Any]) -> dict[str, Any]:
        validated = event if isinstance(event, Event) else Event.model_validate(dict(event))
        return validated.model_dump(mode="json")

    def route(self, event: Event | Mapping[str, Any]) -> Any:
        """One event to its agent (by `agent` or by type): :meth:`Client.emit`."""
        return self.client.emit(event)

    def collaborate(self, agents: list[str], event: Event | Mapping[str, Any]) -> FlowHandle:
        """The same event to every agent in `agents`, in parallel; outputs merged."""
        if not agents:
            raise ValueError("collaborate needs at least one agent")
        template = self._template(event)
        header = group(flow_step.si(None, template, a).set(queue=agent_queue(a)) for a in agents)
        body = flow_merge.s(agents).set(queue=agent_queue(agents[0]))
        return FlowHandle(chord(header, body).apply_async())

    def sequential(self, agents: list[str], event: Event | Mapping[str, Any]) -> FlowHandle:
        """A pipeline: each agent's output is the next agent's ``data.input``."""
        if not agents:
            raise ValueError("sequential needs at least one agent")
        template = self._template(event)
        first, *rest = agents
        steps = [flow_step.si(None, template, first).set(queue=agent_queue(first))]
        steps += [flow_step.s(template, a).set(queue=agent_queue(a)) for a in rest]
        return FlowHandle(chain(*steps).apply_async())

    def mixed(self, parallel: list[str], then: list[str],
              event: Event | Mapping[str, Any]) -> FlowHandle:  # fmt: skip
        """`parallel` agents on the event at once (as :meth:`collaborate`), then the
        `then` agents as a pipeline (as :meth:`sequential`) whose first agent gets the
        merged result as ``data.input``; the result is the pipeline's last step's."""
        if not parallel or not then:
            raise ValueError("mixed needs at least one parallel agent and one after them")
        template = self._template(event)
        header = group(flow_step.si(None, template, a).set(queue=agent_queue(a))
                       for a in parallel)  # fmt: skip
        merged = chord(header, flow_merge.s(parallel).set(queue=agent_queue(parallel[0])))
        steps = [flow_step.s(template, a).set(queue=agent_queue(a)) for a in then]
        return FlowHandle(chain(merged, *steps).apply_async())

    def loop(
        self,
        agent: str,
        event: Event | Mapping[str, Any],
        *,
        until: str = "done",
        max_iterations: int = 5,
    ) -> FlowHandle:
        """Run `agent` until its output's `until` key is true, at most `max_iterations` times."""
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        template = self._template(event)
        sig = flow_loop.si(None, template, agent, until, 1, max_iterations)
        return FlowHandle(sig.set(queue=agent_queue(agent)).apply_async())
