"""`agentflow trace <event id | session id>`: an event's or a session's timeline."""

from __future__ import annotations

import json
from typing import Any

import click

from agentflow.cli._util import friendly_errors


@click.command("trace")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.option("--no-follow", is_flag=True, help="Do not show the events a result chained to.")
@friendly_errors
def trace(ident: str, as_json: bool, no_follow: bool) -> None:
    """Show the trace of an event (and the events it chained to) or of a session's events.

    Needs ``[monitoring] trace = true`` on the workers; traces expire after
    ``[monitoring] trace_ttl``.
    """
    from agentflow._redis.connection import get_redis
    from agentflow.config import get_settings
    from agentflow.timeline import read_trace

    data = read_trace(get_redis(), get_settings().broker.key_prefix, ident,
                      follow=not no_follow)  # fmt: skip
    if not any(e["steps"] for e in data["events"]):
        raise click.ClickException(
            f"no trace for {ident!r}: is `[monitoring] trace = true` on the workers, and is "
            "it younger than `trace_ttl`?"
        )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console

    Console().print(render(data))


def render(data: dict[str, Any]) -> Any:
    """The trace as a rich Tree: events, their steps (ms from the first), chained events."""
    from rich.tree import Tree

    events = data["events"]
    starts = [s["at"] for e in events for s in e["steps"] if "at" in s]
    origin = min(starts) if starts else 0.0
    title = f"session {data['session']}" if data["session"] else f"event {events[0]['event_id']}"
    root = Tree(f"[bold]{title}[/]")
    for event in events:
        _add_event(root, event, origin)
    return root


def _add_event(parent: Any, event: dict[str, Any], origin: float) -> None:
    steps = event["steps"]
    agent = next((s.get("agent") for s in steps if s.get("kind") == "start"), "?")
    end: dict[str, Any] = next((s for s in reversed(steps) if s.get("kind") == "end"), {})
    node = parent.add(f"[bold cyan]{event['event_id']}[/] agent [bold]{agent}[/] "
                      f"→ {end.get('outcome', 'running')}")  # fmt: skip
    for step in steps:
        at = (step.get("at", origin) - origin) * 1000
        node.add(f"[dim]+{at:9.1f} ms[/] {_describe(step)}")
    for nxt in event.get("next", []):
        _add_event(node, nxt, origin)


def _describe(step: dict[str, Any]) -> str:
    kind = step.get("kind", "?")
    if kind == "start":
        wait = step.get("queue_wait_ms")
        waited = f", waited {wait:.1f} ms in queue" if isinstance(wait, int | float) else ""
        return (f"start step {step.get('step')} on {step.get('worker')} "
                f"(attempt {step.get('attempt')}{waited})")  # fmt: skip
    if kind == "llm":
        hit = " (cache hit)" if step.get("cache_hit") else ""
        return (f"llm {step.get('model')}: {step.get('prompt_tokens')}+"
                f"{step.get('completion_tokens')} tokens, ${step.get('cost_usd', 0):.6f}, "
                f"{step.get('ms')} ms{hit}")  # fmt: skip
    if kind == "tool":
        error = f" [red]error: {step['error']}[/]" if step.get("error") else ""
        cached = " (cached)" if step.get("cached") else ""
        return f"tool {step.get('name')} {step.get('ms')} ms on {step.get('worker')}{cached}{error}"
    if kind == "agent":
        error = f" [red]{step['error']}[/]" if step.get("error") else ""
        return f"agent ran {step.get('ms')} ms → {step.get('returned', 'error')}{error}"
    if kind == "hooks":
        return f"hooks {step.get('hook')} {step.get('ms')} ms"
    if kind == "fan_out":
        return f"fan-out: {', '.join(step.get('tools', []))}"
    if kind == "chained":
        return f"chained to {', '.join(step.get('route') or [])}: {', '.join(step['events'])}"
    if kind == "end":
        reason = f": {step['reason']}" if step.get("reason") else ""
        return f"end {step.get('outcome')} after {step.get('ms')} ms{reason}"
    return json.dumps(step)
